"""mixedstack/record"""
