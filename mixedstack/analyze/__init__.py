"""mixedstack/analyze"""
