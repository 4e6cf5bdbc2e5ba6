import json
d = json.load(open('bench/results/spec-decode-cpu-20261130-s14/tsim.json'))
tr = d['traces']
edit = [t for v in tr.values() if v['kind']=='edit_file' for t in v['turns']]
allk = {}
for v in tr.values(): allk.setdefault(v['kind'], []).extend(v['turns'])
C = {1: 1.024, 2: 1.249, 16: 2.38}
def oracle(L, widths):
    n=len(L); best=[0.0]*(n+1)
    for p in range(n-1,0,-1):
        best[p]=min(C[w]+best[min(n,p+1+min(L[p],w-1))] for w in widths)
    return best[1] if n>1 else 0
def rule(L,P,S, f):
    n=len(L); p=1; c=0
    while p<n:
        w=f(P[p],S[p])
        kept=min(L[p], w-1, n-p-1)
        c+=C[w]; p+=1+kept
    return c
def show(name, turns):
    plain=sum(len(t[0])-1 for t in turns)
    o = sum(oracle(t[0],(1,2,16)) for t in turns)
    print(name, 'oracle{1,2,16}', round(plain/o,3))
    for mm,mw in [(2,4),(2,3),(2,5),(2,6),(3,4),(1,4),(2,8),(3,6)]:
        f=lambda P,S: 1 if (P==0 or S<mm) else (16 if S>=mw else 2)
        c=sum(rule(*t,f) for t in turns)
        print(f'  rule min{mm} wide{mw}', round(plain/c,3))
show('edit', edit)
for k,v in allk.items(): show(k, v)
print('---')
C.update({4:1.50, 8:2.20, 3:1.45})
for ws in [(1,2,16),(1,4,16),(1,2,4,16),(1,2,8,16),(1,3,16),(1,2,16)]:
    plain=sum(len(t[0])-1 for t in edit)
    print(ws, round(plain/sum(oracle(t[0],ws) for t in edit),3))
# rules with state: last kept
def rule2(L,P,S, f):
    n=len(L); p=1; c=0; last=-1; lastw=1
    while p<n:
        w=f(P[p],S[p],last,lastw)
        kept=min(L[p], w-1, n-p-1)
        c+=C[w]; p+=1+kept; last=kept if w>1 else -1; lastw=w
    return c
plain=sum(len(t[0])-1 for t in edit)
def ev(f, turns=edit):
    plain=sum(len(t[0])-1 for t in turns)
    return round(plain/sum(rule2(*t,f) for t in turns),3)
print('base', ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 else 2)))
print('+wide after full wide', ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 or (lw==16 and l==15) else 2)))
print('+narrow after full', ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 or (l>=lw-1 and lw>1) else 2)))
print('one after wide fail0', ev(lambda P,S,l,lw: 1 if (P==0 or S<2 or (lw==16 and l==0 and S<8)) else (16 if S>=4 else 2)))
print('narrow after wide fail', ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (2 if (lw==16 and l<2 and S<16) else (16 if S>=4 else 2))))
print('P>=15 needed for wide', ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 and P>=8 else 2)))
import collections
# distribution: for S buckets, mean L
b=collections.defaultdict(list)
for L,P,S in edit:
    for p in range(1,len(L)):
        if P[p]>0: b[min(S[p],20)].append(L[p])
for s in sorted(b): print(s, len(b[s]), round(sum(b[s])/len(b[s]),2), round(sum(x>=1 for x in b[s])/len(b[s]),2), round(sum(x>=8 for x in b[s])/len(b[s]),2))
print('=== wide cost sweep')
for wc in (2.38, 2.3, 2.2, 2.1, 2.0, 1.8):
    C[16]=wc
    print(wc, ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 else 2)))
C[16]=2.38
for nc in (1.249, 1.2, 1.15):
    C[2]=nc; print('narrow', nc, ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 else 2)))
C[2]=1.249
for oc in (1.024, 1.0):
    C[1]=oc; print('one', oc, ev(lambda P,S,l,lw: 1 if (P==0 or S<2) else (16 if S>=4 else 2)))
