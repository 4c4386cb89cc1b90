"""The lottery-ticket experiment (IMP with rewinding), all in one place, as open_lth keeps `lottery/`
beside `training/`.

- `protocol.py`  the pre-registered `Protocol`: every choice, validated before anything trains; its hash
                 is the experiment id.
- `runner.py`    `ImpExperiment`: pilot, dense round 0, pruning rounds per arm, stability; resumable.
- `arms.py`      the arms (ticket and its controls), registered by name; a new control is one function.
- `masks.py`     IMP's mask updates (magnitude per round, random masks with the same counts, heads).
- `training.py`  the training loop every arm shares (schedule resumed at K, masked steps, early stopping).
- `stability.py` linear mode connectivity (Frankle et al. 2020).
- `tiny.py`      the from-scratch regime: corpus split, tokenizer, small Llama.
- `lora.py`      LoRA recovery of a sparse pretrained ticket.

Recording, the verdict and the report live one floor up, in `analysis/lottery/`.
"""
