"""Training on top of the field's own libraries: `qwick finetune | pretrain | distill | merge`.

Nothing here imports transformers/peft at import time: they are the optional `qwick[train]` extra, loaded by
the functions that need them (`qwick.train.extra.require_train_extra` names what is missing).
"""
