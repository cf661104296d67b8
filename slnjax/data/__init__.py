"""Tasks (TFDS builders generated locally), tokenizers, and the per-host grain pipeline.

    builder = ensure_built("addition", data_dir)               # builds on first use
    source = load_source("addition", "train", data_dir)         # record i: dict of fields
    ds = make_dataset(source, ByteTokenizer(), batch_size=8, prompt_len=32, target_len=16)
    it = iter(ds); batch = next(it); state = it.get_state()     # resumable
    correct_b = verify_batch("addition", source, batch["index"], answers)
"""
from slnjax.data.bank import TASKS_WITH_BANK, encode_bank
from slnjax.data.pipeline import (
    encode_record,
    global_batch,
    make_dataset,
    make_task_dataset,
    per_process_batch_size,
    shard_range,
)
from slnjax.data.registry import TASKS, Task, get_task, resolve_config, task_names, verify_batch
from slnjax.data.storage import (
    DEFAULT_DATA_DIR,
    DatasetError,
    dataset_path,
    default_manual_dir,
    ensure_built,
    load_builder,
    load_source,
    make_builder,
    problems,
)
from slnjax.data.tasks.base import MissingDataError
from slnjax.data.tasks.execution import SandboxUnavailableError, require_sandbox
from slnjax.data.tokenizers import ByteTokenizer, HFTokenizer, Tokenizer, load_tokenizer
