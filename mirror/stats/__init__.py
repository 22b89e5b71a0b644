"""Dedup statistics: what the index would weigh without sharing, what it stores, what each image costs.

``figures`` holds the definitions as frozen types (and their upstream-style JSON),
``reference`` the same definitions as plain Python over a set of images (the
brute force the tests compare against), ``folder`` the background pass that
folds the writers' change log into the aggregates (sql/routines/stats.sql),
``queries`` the SQL that serves them, ``cli`` ``mirror stats``.
"""
