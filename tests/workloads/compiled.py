"""Test workload: Python compiled to C, from PyPI: msgpack (Cython) and black (mypyc).

    python compiled.py SECONDS_PER_PART

msgpack packs and unpacks nested records; black formats a Python source: each for
SECONDS_PER_PART seconds of CPU time, called from plain Python functions.
"""
import sys
import time

import black
import msgpack

RECORD = {"id": 1, "name": "mixedstack", "tags": ["a", "b", "c"] * 4, "scores": list(range(40)),
          "nested": {"x": 1.5, "y": [{"k": i, "v": str(i) * 3} for i in range(10)]}}
SOURCE = '''
def f(a,b = 1, *args, **kwargs):
    return [x*2 for x in range(a) if x%2==0] + list(args)+[kwargs.get( "c" , b )]
class C( object ) :
    def m(self,x): return {  'k':x ,'v' : [1,2,3 ] }
''' * 20


def msgpack_part(seconds):
    end = time.thread_time() + seconds
    packer = msgpack.Packer()
    while time.thread_time() < end:
        data = packer.pack([RECORD] * 50)
        msgpack.unpackb(data)


def black_part(seconds):
    end = time.thread_time() + seconds
    mode = black.Mode()
    while time.thread_time() < end:
        black.format_str(SOURCE, mode=mode)


def main(seconds):
    msgpack_part(seconds)
    black_part(seconds)


if __name__ == "__main__":
    main(float(sys.argv[1]))
