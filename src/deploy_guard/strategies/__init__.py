"""Strategies: small pure state machines, history of analyses and actions -> next move.

A strategy never waits, reads or writes; the driver
(:mod:`deploy_guard.runtime.driver`) does what it says and appends what came
of it to the history. So each one is tested from plain data
(``tests/strategies/``), without the emulator, and a test keeps the package's
imports pure.
"""
