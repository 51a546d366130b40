"""bench/kv_bench.py's parts: the systems, the load, failover, CPU, records and the table.

Rule: bench/kv_bench.py is the entry point (its flags and its rows are the
interface); these modules import only each other, bench/context.py and raftkv.
"""
