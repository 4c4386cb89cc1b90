"""The lottery-ticket experiment (IMP with rewinding), all in one place, as open_lth keeps `lottery/`
beside `training/`.

- `protocol.py`  the pre-registered `Protocol`: every choice, validated before anything trains; its hash
                 is the experiment id.
- `runner.py`    `ImpExperiment`: continuous dense run, level 0 and the pruning levels per arm (all resumed at
                 K with the optimizer state), stability; resumable to the same ids.
- `pilot.py`     tunes lr and T (a schedule per candidate T, grids extended at an edge), measures seed noise.
- `stats.py`     t-intervals, TOST, exact TOST power and the seed count, the fixed testing order.
- `processes.py` several processes (accelerate launch): rank 0 writes, the others wait and read.
- `arms.py`      the arms (ticket and its controls), registered by name; a new control is one function.
- `masks.py`     IMP's mask updates (magnitude per round, random masks with the same counts, heads).
- `training.py`  the training loop every arm shares (schedule and AdamW state resumed at K, masked steps,
                 early stopping, DDP through accelerate).
- `stability.py` linear mode connectivity (Frankle et al. 2020).
- `tiny.py`      the from-scratch regime: corpus split, tokenizer, small Llama.
- `lora.py`      LoRA recovery of a sparse pretrained ticket.

Recording, the verdict and the report live one floor up, in `analysis/lottery/`.
"""
