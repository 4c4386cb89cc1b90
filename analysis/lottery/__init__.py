"""Lottery-ticket experiments in the ledger (`experiments.py`: recording, the sparsity x arm table, the
report and figures) and the lottery-ticket verdict (`lottery_verdict.py`: paired intervals, matching,
winning, sanity check), not to be confused with governance's review verdict (`analysis/governance/verdict.py`).
The engine is `pruning/lottery/`."""
