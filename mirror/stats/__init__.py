"""Dedup statistics: what the index would weigh without sharing, what it stores, what each image costs.

``figures`` holds the definitions as frozen types (and their upstream-style JSON),
``reference`` the same definitions as plain Python over a set of images (the
brute force the tests compare against), ``queries`` the SQL that serves them
from the aggregates ``sql/040_stats.sql`` keeps current, ``cli`` ``mirror stats``.
"""
