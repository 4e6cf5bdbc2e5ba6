import re


def slugify(title: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", title)
