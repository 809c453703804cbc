"""Processors: pure functions (or small callable objects) that transform stacks.

names.py   native frame names, FlameGraph's rules and annotations
python.py  the Python merge (py:: trampolines + interpreter plumbing -> Python frames)
"""
