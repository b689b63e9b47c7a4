"""Experiments: measurements that inform defaults, kept out of the shipping path (nothing imports them)."""
