source bench/device_setup.sh >/dev/null 2>&1; echo setup ok
