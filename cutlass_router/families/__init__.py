"""Kernel families: each turns a frozen spec into C++ source and says how it is launched."""
