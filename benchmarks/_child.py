"""Code the benchmarks put at the top of the child processes they measure: a sampler of the child's resident memory,
and exclusive timers (a nested timed call's time is its own, not its caller's)."""

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

TIMERS = r"""
import functools, time

spent, _stack = {}, []

def timed(label, fn, record=None):
    # fn wrapped so that its time, less the time of timed calls inside it, adds to spent[label]; record(seconds)
    # is also called with that exclusive time
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _stack.append(0.0)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            total = time.perf_counter() - start
            own = total - _stack.pop()
            spent[label] = spent.get(label, 0.0) + own
            if _stack:
                _stack[-1] += total
            if record is not None:
                record(own)
    return wrapper
"""
