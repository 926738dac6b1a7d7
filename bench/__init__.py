"""`make bench`: the system's benchmarks, each measured against a baseline in the same run."""
