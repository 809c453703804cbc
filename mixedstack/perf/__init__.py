"""mixedstack/perf"""
