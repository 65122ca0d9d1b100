"""Code the benchmarks put at the top of the child processes they measure: a sampler of the child's resident memory."""

RSS_SAMPLER = r"""
import threading, time

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

peak = [0.0]
def sample():
    while True:
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.002)
"""
