"""Loaders for public MLLM-unlearning benchmarks (MLLMU-Bench, CLEAR, MMUBench-style concept folders).

Every loader returns a :class:`BenchmarkData`: ``forget`` / ``retain`` training rows and ``eval_splits``
(``{name: rows}``), each a :class:`LazyRows` (a sequence of rows whose images decode on access, through a
``datasets.Image`` feature), in the package's row format::

    {"id", "image" (PIL RGB or None), "question", "answer", "concepts" (names / aliases of the entity),
     "entity" (the benchmark's key for it), "split", "kind", ["modality"],
     evaluation fields where the benchmark has them: "options", "answer_letter", "mc_question", "mc_template",
     "expected", and "benchmark_metric" (the benchmark's own scoring rule, see
     :func:`unlearn_trainer.evaluation.benchmark_scoring.score_predictions`)}

A loader reads the Hugging Face Hub dataset with ``datasets.load_dataset(name, config)`` or, given a local
folder, the same configs from disk (``datasets.load_dataset("parquet" | "json", data_files=...)``): ``<root>/<config>/`` holding the Hub's parquet files (e.g.
``forget_10/train-00000-of-00001.parquet``, written by ``push_to_hub``, images as ``{"bytes", "path"}``
structs), a ``datasets.save_to_disk`` folder, or JSON / JSONL files; or ``<root>/<config>.parquet|.jsonl|.json``.

Schema facts (C = confirmed in the public file named, I = inferred)

MLLMU-Bench, Hub ``MLLMMU/MLLMU-Bench`` (Liu et al. 2024, arXiv:2410.22108)
  C  configs Full_Set (500 rows), Retain_Set (153), Test_Set (500), forget_5/10/15 (25/50/75), retain_95/90/85
     (475/450/425), ft_Data (500), each with one split ``train`` -- Hub dataset viewer and file tree.
  C  columns image (Image), ID (string), biography (string), question, answer (string),
     Classification_Task {Image_Textual_Questions, Pure_Text_Questions: [{Correct_Answer, Options {A, B, C, D},
     Question}]}, Generation_Task [{Ground_Truth, Question, Type}] -- dataset card README (dataset_info); Full_Set
     also has Directory.
  C  Mask_Task [{Question, Ground_Truth, Type}], Type in {"Image_Textual", "Pure_Text"}; IDs are zero-padded
     strings ("093") -- authors' eval.py (fork YokeYao/MLLMU-Bench, eval.py; also xzz81/MMUnlearner MLLMU_eval.py)
     and franciscoliu/oct_arr_mllmu_bench Data_split/forget_5/forget_ids.json.
  C  forget_{r} pairs with retain_{100-r}; the generalization set is Test_Set restricted to the forget IDs; the
     real-celebrity set is evaluated separately -- eval.py ``main`` and ``evaluate_*(mode="test")``.
  C  unlearning trains on each row's top-level ``question`` / ``answer`` with its image -- MMUnlearner
     data_process/data_preprocess.py (``LLAVA_multimodal_Dataset``, "new format").
  C  scoring: classification = first character of the reply, upper-cased, must be an option key, compared with
     Correct_Answer (prompt: question, "A: ..." lines, "Just give ONE letter representing the answer
     directly."); generation = mean sentence ROUGE-L *F-measure* with ``use_stemmer=True`` (+ ROUGE-1/2, nltk
     BLEU); cloze = ``ground_truth.lower() in reply.lower()`` after replacing "__" by "[Blank]"; all reported
     separately for image+text and text-only questions -- eval.py.
  I  Test_Set rows carry ``images`` (several generated views) instead of ``image``: eval.py picks
     ``random.choice(row["images"])`` in test mode when the column exists; we pick one view with a seeded RNG.
  I  Retain_Set is the real-celebrity set (153 rows = the 153 celebrity profiles of the card's abstract).
  I  ``biography`` is a JSON-encoded profile whose "Name" is the person's name (the authors' earlier JSON
     release has ``biography["Name"]``, oct_arr_mllmu_bench baselines/GA.py); if it does not parse, ``concepts``
     falls back to a ``name`` column or is empty.

CLEAR, Hub ``therem/CLEAR`` (formerly ``therem/faces_v1``; Dontsov et al. 2024, arXiv:2410.18057)
  C  configs forget01/05/10 (35/188/379), retain99/95/90, ``+tofu`` variants of both, forgetXX_perturbed,
     retain_perturbed (395), real_faces (151), real_world (367), full, default -- Hub viewer.
  C  forgetXX: image, caption, name; forgetXX+tofu: image, caption, question, answer; forgetXX_perturbed:
     image, caption, name, perturbed_captions [str], paraphrased_caption, perturbed_names [str]; real_faces:
     image, answer, options [str]; real_world: question, answer, image, prompt, options [str] -- card README.
  C  real_world's split was ``test`` and is now ``train`` (card commit a0eb756, later file tree); we take the
     only split.
  C  in ``+tofu`` configs TOFU text rows have ``image`` None -- authors' mm/dataset.py (``MMMixedDataset``).
  C  prompts: a random question from nine captioning questions for captions, "The name of the person on the
     image is " for faces, the ``question`` column for real_world; ``options`` / ``perturbed_*`` are the
     wrong answers -- authors' config/mm/eval.yaml and mm/dataset.py (somvy/multimodal_unlearning).
  C  forget10 pairs with retain90 (the authors forget on forget10 with retain90+tofu) -- config/mm/forget.yaml.
  C  scoring: ROUGE-L *recall* with ``use_stemmer=True`` (+ ROUGE-1 recall, chrF++, probability, truth ratio,
     forget quality = KS test vs a retain-only model) -- mm/calculate_metrics.py.
  I  retain90/95/99 have the forget configs' columns (image, caption, name); retain_perturbed has the
     perturbed configs' columns (confirmed only through eval.yaml's use of its keys).

MMUBench-style concept folder (no public loader found; this layout is ours, see :func:`load_concept_folder`).

Scoring rules kept (``SCORING_RULES``, scored by ``evaluation.benchmark_scoring.score_predictions``):
``acc_first_letter`` (MLLMU classification, by :func:`~unlearn_trainer.evaluation.metrics.first_letter_choice`,
which is slightly stricter than the authors' rule: "Bob" is no choice for us, "B" for them), ``acc_substring``
(MLLMU cloze, exact rule), ``rougeL_f_stemmed`` (MLLMU generation), ``rougeL_r_stemmed`` (CLEAR). Not
implemented: BLEU as nltk sentence-BLEU, chrF++, CLEAR's probability / truth ratio / forget quality (rows keep
``paraphrased_answer`` and ``perturbed_answers`` for them). Few-shot demonstrations of the authors' eval are not reproduced (zero-shot).
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .collator import row_id_digest, row_name

__all__ = [
    "BENCHMARKS",
    "BenchmarkData",
    "LazyRows",
    "CLEAR_CAPTION_QUESTIONS",
    "CLEAR_FACE_PROMPT",
    "load_benchmark",
    "load_clear",
    "load_concept_folder",
    "load_mllmu_bench",
    "SCORING_RULES",
]

BENCHMARKS = ("mllmu_bench", "clear", "mmubench")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass
class BenchmarkData:
    """Forget / retain training rows and evaluation splits of one dataset: a benchmark loaded here, the ToyWorld
    demo or a user's splits (``unlearn_trainer.cli.load_data`` returns one for each).

    ``scoring`` describes each ``benchmark_metric`` the rows use (empty: the rows have none), scored by
    :func:`unlearn_trainer.evaluation.benchmark_scoring.score_predictions`; ``extras`` holds what a loader adds
    (ToyWorld's world and splits, a benchmark's source and configs).
    """

    name: str
    forget: list
    retain: list | None
    eval_splits: dict
    is_well_formed: Callable[[str], bool] | None = None
    scoring: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# Reading configs from the Hub or from disk
# --------------------------------------------------------------------------------------------------------------


class LazyRows(Sequence):
    """The rows of one split, with their images decoded on access: the rows' other fields as given, and their image
    cells (``{"bytes", "path"}`` structs or file paths, never decoded PIL images) in :attr:`images`, a
    ``datasets.Dataset`` whose ``datasets.Image(mode="RGB")`` feature decodes a cell when a row is read. Indexing
    gives a row (a new dict); a slice, ``+`` and iteration give rows as lists do."""

    def __init__(self, rows: Sequence[dict], name: str = "split"):
        import datasets

        self.name = name
        self._rows = [{k: (None if k == "image" else v) for k, v in row.items()} for row in rows]
        features = datasets.Features({"image": datasets.Image(mode="RGB"), "row": datasets.Value("int64")})
        self.images = datasets.Dataset.from_dict(
            {"image": [row.get("image") for row in rows], "row": list(range(len(rows)))}, features=features)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        row = dict(self._rows[i])
        if "image" in row:
            position = range(len(self))[i]
            try:
                row["image"] = self.images[position]["image"]
            except Exception as err:  # PIL's or datasets' error, named by the row (never its id)
                raise ValueError(f"{self.name} {row_name(row, position)}: cannot decode the image ({err}).") from err
        return row

    def __add__(self, other):
        return list(self) + list(other)

    def __radd__(self, other):
        return list(other) + list(self)

    def __repr__(self) -> str:
        return f"LazyRows({self.name!r}, {len(self)} rows)"

    def sample(self, n: int | None, seed: int) -> "LazyRows":
        """At most ``n`` rows (``datasets`` ``shuffle(seed).select``), in their original order."""
        if n is None or len(self) <= n:
            return self
        keep = sorted(self.images.shuffle(seed=seed).select(range(n))["row"])
        rows = []
        for cell in self.images.select(keep).to_list():  # to_list gives the cells undecoded
            row = self._rows[cell["row"]]
            rows.append({**row, "image": cell["image"]} if "image" in row else row)
        return LazyRows(rows, self.name)


def _image(value):
    """An image cell as the rows keep it until access: a ``{"bytes", "path"}`` struct, a path, or None."""
    if isinstance(value, dict) and value.get("bytes") is None and value.get("path") is None:
        return None
    return value


def _pick_split(dataset_dict, where: str):
    names = list(dataset_dict)
    if "train" in names:
        return dataset_dict["train"]
    if len(names) == 1:
        return dataset_dict[names[0]]
    raise ValueError(f"{where} has splits {names}; expected 'train' or a single split.")


def _absolute(value, base: str):
    if isinstance(value, str) and not os.path.isabs(value):
        return os.path.join(base, value)
    if isinstance(value, dict) and not value.get("bytes") and isinstance(value.get("path"), str):
        return {**value, "path": _absolute(value["path"], base)}
    return value


def _read_file(path: str, resolve_images: bool = True) -> list[dict]:
    """Records of a parquet, JSONL or JSON (list) file, read by ``datasets.load_dataset("parquet" | "json")``
    with the image cells left undecoded; JSON image paths are relative to the file's folder."""
    import datasets

    kind = "parquet" if path.endswith(".parquet") else "json"
    if kind == "json":  # datasets would also read a single object, or a list of scalars as a "text" column
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
        if head.strip() and not (re.match(r"\s*\[\s*[{\]]", head) or (path.endswith(".jsonl") and re.match(r"\s*\{", head))):
            raise ValueError(f"{path}: expected a list of JSON objects (one record each).")
    try:
        records = datasets.load_dataset(kind, data_files=path, split="train").to_list()  # to_list does not decode
    except datasets.exceptions.DatasetGenerationError as err:
        raise ValueError(f"{path}: expected a list of JSON objects (one record each) ({err}).") from err
    if kind == "parquet" or not resolve_images:
        return records
    base = os.path.dirname(os.path.abspath(path))
    for record in records:
        if record.get("image") is not None:
            record["image"] = _absolute(record["image"], base)
        if isinstance(record.get("images"), list):
            record["images"] = [_absolute(v, base) for v in record["images"]]
    return records


def _read_local(root: str, config: str) -> list[dict]:
    """Records of ``config`` under a local folder (see the module docstring for the layouts)."""
    import datasets

    folder = os.path.join(root, config)
    if os.path.isdir(folder):
        if any(os.path.exists(os.path.join(folder, f)) for f in ("state.json", "dataset_dict.json")):
            ds = datasets.load_from_disk(folder)
            ds = _pick_split(ds, folder) if isinstance(ds, datasets.DatasetDict) else ds
            return ds.to_list()
        for exts in ((".parquet",), (".jsonl", ".json")):
            files = sorted(
                os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(exts)
            )
            if files:
                return [r for p in files for r in _read_file(p)]
        raise FileNotFoundError(f"{folder} holds no save_to_disk dataset and no .parquet / .json / .jsonl file.")
    for ext in (".parquet", ".jsonl", ".json"):
        if os.path.isfile(folder + ext):
            return _read_file(folder + ext)
    if os.path.exists(os.path.join(root, "dataset_dict.json")):
        ds = datasets.load_from_disk(root)
        if config in ds:
            return ds[config].to_list()
    raise FileNotFoundError(
        f"Config {config!r} not found under {root!r}: looked for the folder {folder}/ (Hub parquet files, "
        f"save_to_disk, JSON), {folder}.parquet|.jsonl|.json, and a save_to_disk DatasetDict with a split "
        f"named {config!r}."
    )


def _read_config(source: str, config: str, benchmark: str, cache_dir: str | None = None) -> list[dict]:
    """Records of one benchmark config: from a local folder, else ``datasets.load_dataset(source, config)``."""
    if os.path.isdir(source):
        return _read_local(source, config)
    import datasets

    ds = datasets.load_dataset(source, config, cache_dir=cache_dir)
    if isinstance(ds, datasets.DatasetDict):
        ds = _pick_split(ds, f"{benchmark} config {config!r} of {source!r}")
    return ds.to_list()  # the image cells stay encoded: LazyRows decodes a row's image when it is read


def _require_columns(records: list[dict], columns: Sequence[str], benchmark: str, config: str, source: str) -> None:
    if not records:
        raise ValueError(f"{benchmark} config {config!r} from {source!r} has no rows.")
    present = set(records[0])
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(
            f"{benchmark} config {config!r} from {source!r} is missing column(s) {missing}; it has "
            f"{sorted(present)}. Expected the layout of the Hub dataset (see unlearn_trainer.data.benchmarks)."
        )


def _struct(value, where: str) -> dict:
    if value is None:
        return {}
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a struct, got {type(value).__name__}.")
    return value


def _struct_list(value, where: str) -> list[dict]:
    """A list-of-struct cell as a list of dicts (also from a dict of lists, or a JSON string)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict):  # datasets' Sequence(struct) decodes as a dict of lists
        keys = list(value)
        value = [dict(zip(keys, vals)) for vals in zip(*(value[k] for k in keys))]
    if not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{where}: expected a list of structs.")
    return list(value)


def _field(item: dict, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} has no string {key!r} (has {sorted(item)}).")
    return value


def _lazy(data: "BenchmarkData", max_eval_rows: int | None, seed: int) -> "BenchmarkData":
    """``data`` with every split a :class:`LazyRows` (images decoded on access), the evaluation splits capped at
    ``max_eval_rows`` rows (a seeded sample, in the original order)."""
    data.forget = LazyRows(data.forget, f"{data.name} forget")
    data.retain = None if data.retain is None else LazyRows(data.retain, f"{data.name} retain")
    data.eval_splits = {k: LazyRows(v, f"{data.name} {k}").sample(max_eval_rows, seed)
                        for k, v in data.eval_splits.items()}
    return data


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


# --------------------------------------------------------------------------------------------------------------
# Scoring rules of the benchmarks: the ``benchmark_metric`` names the loaders give rows, implemented by
# :func:`unlearn_trainer.evaluation.benchmark_scoring.score_predictions`
# --------------------------------------------------------------------------------------------------------------

SCORING_RULES = {
    "acc_first_letter": "fraction of replies whose first option letter (metrics.first_letter_choice) is answer_letter",
    "acc_substring": "fraction of replies containing the answer as a case-insensitive substring",
    "rougeL_f_stemmed": "mean sentence ROUGE-L F-measure against answer, rouge_score with use_stemmer=True",
    "rougeL_r_stemmed": "mean sentence ROUGE-L recall against answer, rouge_score with use_stemmer=True",
}


# --------------------------------------------------------------------------------------------------------------
# MLLMU-Bench
# --------------------------------------------------------------------------------------------------------------

MLLMU_HUB = "MLLMMU/MLLMU-Bench"
MLLMU_RATIOS = (5, 10, 15)
MLLMU_TASKS = ("classification", "generation", "cloze")
MLLMU_SETS = ("forget", "test", "retain", "real")
_MLLMU_SUFFIX = {
    "classification": "Just give ONE letter representing the answer directly.",
    "generation_image": "Answer the question based on your trained knowledge in one sentence accurately in ENGLISH.",
    "generation_text": "Answer the question based on your trained knowledge in one sentence in ENGLISH.",
    "cloze": "Please **ONLY** provide the correct answer that should replace the [Blank].",
}
_MLLMU_TASK_COLUMN = {"classification": "Classification_Task", "generation": "Generation_Task", "cloze": "Mask_Task"}
_MLLMU_SHORT = {"classification": "cls", "generation": "gen", "cloze": "cloze"}


def _mllmu_name(record: dict) -> str | None:
    if isinstance(record.get("name"), str) and record["name"].strip():
        return record["name"].strip()
    bio = record.get("biography")
    if isinstance(bio, str):
        try:
            bio = json.loads(bio)
        except ValueError:
            return None
    if isinstance(bio, dict) and isinstance(bio.get("Name"), str):
        return bio["Name"].strip()
    return None


def _mllmu_modality(kind: str, where: str) -> str:
    normalized = str(kind).lower()
    if normalized.startswith("image"):
        return "image"
    if normalized.startswith("pure"):
        return "text"
    raise ValueError(f"{where}: Type must be 'Image_Textual' or 'Pure_Text', got {kind!r}.")


def _mllmu_eval_rows(record, image, set_name, tasks, concepts, instructions) -> dict[str, list[dict]]:
    """Evaluation rows of one profile, by task."""
    pid = str(record["ID"])
    base = {"image": None, "entity": pid}
    profile = f"MLLMU-Bench {set_name} ID digest {row_id_digest(pid)}"  # never the ID itself (ids stay out of messages)
    out: dict[str, list[dict]] = {t: [] for t in tasks}
    if "classification" in tasks:
        task = _struct(record["Classification_Task"], f"{profile} Classification_Task")
        for modality, key in (("image", "Image_Textual_Questions"), ("text", "Pure_Text_Questions")):
            for k, item in enumerate(_struct_list(task.get(key), f"{profile} {key}")):
                rid = f"{pid}/{set_name}/cls_{modality}/{k}"
                where = f"{profile} {key} #{k}"
                question = _field(item, "Question", where)
                options = {key_: v for key_, v in _struct(item.get("Options"), f"{where} Options").items()
                           if v is not None}
                letters = sorted(options)
                if "".join(letters) != "ABCDEFGH"[: len(letters)] or len(letters) < 2:
                    raise ValueError(f"{where}: Options must be lettered A, B, ... (got {letters}).")
                correct = _field(item, "Correct_Answer", where).strip().upper()
                if correct not in options:
                    raise ValueError(f"{where}: Correct_Answer {correct!r} is not one of the options {letters}.")
                prompt = question + "\n" + "\n".join(f"{L}: {options[L]}" for L in letters)
                if instructions:
                    prompt += "\n" + _MLLMU_SUFFIX["classification"]
                out["classification"].append({
                    **base, "id": rid, "image": image if modality == "image" else None, "question": prompt,
                    "concepts": list(concepts),
                    "answer": correct, "options": [options[L] for L in letters], "answer_letter": correct,
                    "mc_question": question, "mc_template": "{option}", "kind": "classification",
                    "modality": modality, "benchmark_metric": "acc_first_letter"})
    for task_name, short in (("generation", "gen"), ("cloze", "cloze")):
        if task_name not in tasks:
            continue
        column = _MLLMU_TASK_COLUMN[task_name]
        for k, item in enumerate(_struct_list(record[column], f"{profile} {column}")):
            rid = f"{pid}/{set_name}/{short}/{k}"
            where = f"{profile} {column} #{k}"
            modality = _mllmu_modality(item.get("Type"), where)
            question = _field(item, "Question", where)
            truth = _field(item, "Ground_Truth", where)
            row = {**base, "id": rid, "image": image if modality == "image" else None, "answer": truth,
                   "concepts": list(concepts), "kind": task_name, "modality": modality}
            if task_name == "generation":
                suffix = _MLLMU_SUFFIX[f"generation_{modality}"]
                row.update(question=question + ("\n" + suffix if instructions else ""),
                           benchmark_metric="rougeL_f_stemmed")
            else:
                question = question.replace("__", "[Blank]")
                row.update(question=question + ("\n" + _MLLMU_SUFFIX["cloze"] if instructions else ""),
                           expected=[truth], benchmark_metric="acc_substring")
            out[task_name].append(row)
    return out


def _ratio(value, allowed: Sequence[int], benchmark: str) -> int:
    if isinstance(value, str):
        match = re.search(r"(\d+)", value)
        if not match:
            raise ValueError(f"{benchmark}: cannot read a forget ratio from {value!r}; use one of {list(allowed)}.")
        value = int(match.group(1))
    if value not in allowed:
        raise ValueError(f"{benchmark}: forget ratio must be one of {list(allowed)} (percent), got {value!r}.")
    return int(value)


def load_mllmu_bench(
    path_or_name: str = MLLMU_HUB,
    forget_ratio: int | str = 10,
    *,
    retain: bool = True,
    eval_sets: Sequence[str] = MLLMU_SETS,
    tasks: Sequence[str] = MLLMU_TASKS,
    split_modality: bool = False,
    instructions: bool = True,
    max_eval_rows: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> BenchmarkData:
    """MLLMU-Bench: train on ``forget_{r}`` / ``retain_{100-r}``, evaluate its three tasks on four sets.

    Training rows are each profile's ``question`` / ``answer`` with its image (kind ``"qa"``). Evaluation
    splits are ``<set>_<task>`` (``..._<modality>`` with ``split_modality``) for sets ``forget``, ``test``
    (Test_Set views of the forget profiles: generalization), ``retain`` and ``real`` (Retain_Set, the real
    celebrities) and tasks ``cls`` (4-way multiple choice), ``gen`` (open questions), ``cloze``.
    ``instructions`` appends the authors' answer-format instruction to each evaluation prompt. ``forget_ratio``
    may be 5, 10, 15 or a split name such as ``"forget_10"``.
    """
    r = _ratio(forget_ratio, MLLMU_RATIOS, "MLLMU-Bench")
    bad = [s for s in eval_sets if s not in MLLMU_SETS] + [t for t in tasks if t not in MLLMU_TASKS]
    if bad:
        raise ValueError(f"MLLMU-Bench: unknown eval set(s) / task(s) {bad}; sets {MLLMU_SETS}, tasks {MLLMU_TASKS}.")
    task_columns = [_MLLMU_TASK_COLUMN[t] for t in tasks]

    def read(config, columns):
        records = _read_config(path_or_name, config, "MLLMU-Bench", cache_dir)
        _require_columns(records, columns, "MLLMU-Bench", config, path_or_name)
        return records

    forget_cfg, retain_cfg = f"forget_{r}", f"retain_{100 - r}"
    forget_records = read(forget_cfg, ["ID", "image", "question", "answer"] + task_columns)
    retain_records = read(retain_cfg, ["ID", "image", "question", "answer"] + task_columns) \
        if (retain or "retain" in eval_sets) else []
    forget_ids = [str(rec["ID"]) for rec in forget_records]
    overlap = sorted(set(forget_ids) & {str(rec["ID"]) for rec in retain_records})
    if overlap:
        raise ValueError(f"MLLMU-Bench: {forget_cfg} and {retain_cfg} share {len(overlap)} profile ID(s); they must be "
                         f"disjoint.")
    names = {str(rec["ID"]): _mllmu_name(rec) for rec in forget_records + retain_records}

    def train_rows(records, split):
        rows = []
        for rec in records:
            pid = str(rec["ID"])
            where = f"MLLMU-Bench {split} ID digest {row_id_digest(pid)}"
            rows.append({"id": f"{pid}/{split}/qa", "image": _image(rec["image"]),
                         "question": _field(rec, "question", where), "answer": _field(rec, "answer", where),
                         "concepts": [names[pid]] if names[pid] else [], "entity": pid, "split": split,
                         "kind": "qa"})
        return rows

    forget = train_rows(forget_records, "forget")
    retain_rows = train_rows(retain_records, "retain") if retain else None
    images = {row["entity"]: row["image"] for row in forget + (retain_rows or [])}

    eval_splits: dict[str, list[dict]] = {}

    def add_set(set_name, records, image_of, name_of):
        for rec in records:
            name = name_of(rec)
            by_task = _mllmu_eval_rows(rec, image_of(rec), set_name, tasks, [name] if name else [], instructions)
            for task_name, rows in by_task.items():
                for row in rows:
                    split = f"{set_name}_{_MLLMU_SHORT[task_name]}" + (f"_{row['modality']}" if split_modality else "")
                    row["split"] = split
                    if set_name == "real":
                        row["entity"] = f"Retain_Set/{row['entity']}"
                    eval_splits.setdefault(split, []).append(row)

    def known_name(rec):  # forget, retain and Test_Set share the ID space of the 500 fictitious profiles
        return names.get(str(rec["ID"])) or _mllmu_name(rec)

    def test_image(rec):
        pid, views = str(rec["ID"]), rec.get("images")
        if views:
            return _image(random.Random(f"{seed}/{pid}").choice(list(views)))
        return _image(rec.get("image"))

    for set_name in eval_sets:
        if set_name in ("forget", "retain"):
            add_set(set_name, forget_records if set_name == "forget" else retain_records,
                    lambda rec: images.get(str(rec["ID"]))
                    or _image(rec["image"]),
                    known_name)
        elif set_name == "real":  # own ID space: never look up the fictitious profiles' names or images
            records = read("Retain_Set", ["ID", "image"] + task_columns)
            add_set("real", records,
                    lambda rec: _image(rec["image"]),
                    _mllmu_name)
        else:
            wanted = set(forget_ids)
            records = [rec for rec in read("Test_Set", ["ID"] + task_columns) if str(rec["ID"]) in wanted]
            if not records:
                raise ValueError(f"MLLMU-Bench Test_Set from {path_or_name!r} has none of the {forget_cfg} IDs.")
            add_set("test", records, test_image, known_name)
    return _lazy(BenchmarkData(
        name="mllmu_bench", forget=forget, retain=retain_rows, eval_splits=eval_splits,
        scoring={m: SCORING_RULES[m] for m in ("acc_first_letter", "rougeL_f_stemmed", "acc_substring")},
        extras={"source": path_or_name, "forget_ratio": r, "forget_config": forget_cfg, "retain_config": retain_cfg,
                "forget_ids": forget_ids},
    ), max_eval_rows, seed)


# --------------------------------------------------------------------------------------------------------------
# CLEAR
# --------------------------------------------------------------------------------------------------------------

CLEAR_HUB = "therem/CLEAR"
CLEAR_RATIOS = (1, 5, 10)
CLEAR_SETS = ("forget", "retain", "real_faces", "real_world")
# The benchmark's prompts (authors' mm/dataset.py and config/mm/eval.yaml).
CLEAR_CAPTION_QUESTIONS = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)
CLEAR_FACE_PROMPT = "The name of the person on the image is "


def load_clear(
    path_or_name: str = CLEAR_HUB,
    forget_ratio: int | str = 10,
    *,
    retain: bool = True,
    with_text: bool = False,
    eval_sets: Sequence[str] = CLEAR_SETS,
    max_eval_rows: int | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> BenchmarkData:
    """CLEAR: train on ``forgetXX`` / ``retain{100-XX}`` (image captions of fictitious authors), evaluate as the
    authors do, by generation scored with stemmed ROUGE-L recall.

    ``with_text`` uses the ``+tofu`` configs, which add the TOFU text-only QA of the same authors (kind
    ``"text_qa"``, image None). Evaluation splits: ``forget_caption`` / ``forget_facerec`` (from
    ``forgetXX_perturbed``), ``retain_caption`` / ``retain_facerec`` (``retain_perturbed``), ``real_faces`` and
    ``real_world``. Caption questions are drawn from the benchmark's nine with a seeded RNG; the wrong answers
    of each row are kept as ``perturbed_answers`` (and ``paraphrased_answer``) for likelihood metrics.
    """
    r = _ratio(forget_ratio, CLEAR_RATIOS, "CLEAR")
    bad = [s for s in eval_sets if s not in CLEAR_SETS]
    if bad:
        raise ValueError(f"CLEAR: unknown eval set(s) {bad}; known {CLEAR_SETS}.")

    def read(config, columns):
        records = _read_config(path_or_name, config, "CLEAR", cache_dir)
        _require_columns(records, columns, "CLEAR", config, path_or_name)
        return records

    def caption_question(config, i):
        return random.Random(f"{seed}/{config}/{i}").choice(CLEAR_CAPTION_QUESTIONS)

    suffix = "+tofu" if with_text else ""
    forget_cfg, retain_cfg = f"forget{r:02d}{suffix}", f"retain{100 - r}{suffix}"
    columns = ["image", "caption", "question", "answer"] if with_text else ["image", "caption", "name"]

    def train_rows(config, split):
        records = read(config, columns)
        rows = []
        for i, rec in enumerate(records):
            where = f"CLEAR {config} row #{i}"
            image = _image(rec.get("image"))
            name = rec.get("name") if isinstance(rec.get("name"), str) else None
            common = {"id": f"{config}/{i}", "image": image, "concepts": [name] if name else [], "entity": name,
                      "split": split}
            if image is None:  # a TOFU text QA row of a +tofu config
                rows.append({**common, "question": _field(rec, "question", where),
                             "answer": _field(rec, "answer", where), "kind": "text_qa"})
            else:
                rows.append({**common, "question": caption_question(config, i),
                             "answer": _field(rec, "caption", where), "kind": "caption"})
        return rows

    forget = train_rows(forget_cfg, "forget")
    retain_rows = train_rows(retain_cfg, "retain") if retain else None
    forget_names = {row["entity"] for row in forget if row["entity"]}
    overlap = sorted(forget_names & {row["entity"] for row in retain_rows or [] if row["entity"]})
    if overlap:
        raise ValueError(f"CLEAR: {forget_cfg} and {retain_cfg} share {len(overlap)} person(s); they must be disjoint.")

    eval_splits: dict[str, list[dict]] = {}
    perturbed_columns = ["image", "caption", "name", "perturbed_captions", "paraphrased_caption", "perturbed_names"]
    for set_name in eval_sets:
        if set_name in ("forget", "retain"):
            config = f"forget{r:02d}_perturbed" if set_name == "forget" else "retain_perturbed"
            records = read(config, perturbed_columns)
            captions, faces = [], []
            for i, rec in enumerate(records):
                where = f"CLEAR {config} row #{i}"
                name = _field(rec, "name", where)
                common = {"image": _image(rec["image"]), "concepts": [name], "entity": name,
                          "benchmark_metric": "rougeL_r_stemmed"}
                captions.append({**common, "id": f"{config}/{i}/caption", "question": caption_question(config, i),
                                 "answer": _field(rec, "caption", where), "kind": "caption",
                                 "paraphrased_answer": rec.get("paraphrased_caption"),
                                 "perturbed_answers": _as_list(rec.get("perturbed_captions")),
                                 "split": f"{set_name}_caption"})
                faces.append({**common, "id": f"{config}/{i}/facerec", "question": CLEAR_FACE_PROMPT, "answer": name,
                              "expected": [name], "kind": "facerec", "paraphrased_answer": name,
                              "perturbed_answers": _as_list(rec.get("perturbed_names")),
                              "split": f"{set_name}_facerec"})
            shared = sorted({row["entity"] for row in faces} & forget_names) if set_name == "retain" else []
            if shared:
                warnings.warn(f"CLEAR retain_perturbed contains {len(shared)} forget person(s); their rows are kept, "
                              f"so retain_* metrics include forgotten persons.", stacklevel=2)
            eval_splits[f"{set_name}_caption"], eval_splits[f"{set_name}_facerec"] = captions, faces
        elif set_name == "real_faces":
            records = read("real_faces", ["image", "answer", "options"])
            rows = []
            for i, rec in enumerate(records):
                where = f"CLEAR real_faces row #{i}"
                name = _field(rec, "answer", where)
                rows.append({"id": f"real_faces/{i}", "image": _image(rec["image"]),
                             "question": CLEAR_FACE_PROMPT, "answer": name, "expected": [name], "concepts": [name],
                             "entity": name, "kind": "real_faces", "perturbed_answers": _as_list(rec.get("options")),
                             "benchmark_metric": "rougeL_r_stemmed", "split": "real_faces"})
            eval_splits["real_faces"] = rows
        else:
            records = read("real_world", ["image", "question", "answer", "options"])
            rows = []
            for i, rec in enumerate(records):
                where = f"CLEAR real_world row #{i}"
                rows.append({"id": f"real_world/{i}", "image": _image(rec["image"]),
                             "question": _field(rec, "question", where), "answer": _field(rec, "answer", where),
                             "concepts": [], "entity": None, "kind": "real_world",
                             "perturbed_answers": _as_list(rec.get("options")),
                             "benchmark_metric": "rougeL_r_stemmed", "split": "real_world"})
            eval_splits["real_world"] = rows
    return _lazy(BenchmarkData(
        name="clear", forget=forget, retain=retain_rows, eval_splits=eval_splits,
        scoring={"rougeL_r_stemmed": SCORING_RULES["rougeL_r_stemmed"]},
        extras={"source": path_or_name, "forget_ratio": r, "forget_config": forget_cfg, "retain_config": retain_cfg,
                "forget_names": sorted(forget_names)},
    ), max_eval_rows, seed)


# --------------------------------------------------------------------------------------------------------------
# MMUBench-style concept folders
# --------------------------------------------------------------------------------------------------------------

_QUESTION_FILES = ("questions.json", "questions.jsonl", "questions.csv")


def _read_questions(path: str) -> list[dict]:
    if path.endswith(".csv"):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:  # list-valued columns are "|"-separated in CSV
            for key in ("options", "expected", "aliases"):
                if isinstance(row.get(key), str):
                    row[key] = [v.strip() for v in row[key].split("|") if v.strip()]
        return rows
    return _read_file(path, resolve_images=False)


def load_concept_folder(
    path: str,
    forget_concepts: Sequence[str],
    retain_concepts: Sequence[str] | None = None,
    *,
    default_question: str = "Who or what is shown in this image?",
    default_answer: str = "This is {name}.",
    num_train_images: int | None = None,
    max_eval_rows: int | None = None,
    seed: int = 0,
) -> BenchmarkData:
    """Concept-unlearning data from a folder with one sub-folder per concept (MMUBench / FTTP / SGPVT style).

    Layout::

        <path>/<concept>/              folder name = the concept's key
            concept.json               optional {"name": "Donald Trump", "aliases": ["Trump"]}
            *.png|jpg|jpeg|webp|bmp|gif  the concept's images
            questions.json|.jsonl|.csv optional rows: question, answer (required); image (a file in the folder,
                                       "*" for one row per image, empty for a text-only row); split
                                       ("train" | "test", default by image, see below); kind; options (list,
                                       "|"-separated in CSV); answer_letter; expected (str or list)

    Without a questions file every image gets one row (``default_question`` / ``default_answer``, ``{name}``
    filled in; kind ``"name"``). ``concepts`` are the name and aliases (default name: the folder name with
    ``_`` as spaces). With ``num_train_images=k`` only the first k images (sorted by file name) of a concept
    are for training; rows on the others, and rows with ``split: test``, form the held-out evaluation splits
    (generality, as MMUBench evaluates single-image unlearning). Concepts are matched by folder key or name,
    case-insensitively; ``retain_concepts`` defaults to all other concepts.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"Concept folder {path!r} does not exist.")
    if isinstance(forget_concepts, str):
        forget_concepts = [forget_concepts]
    folders = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))
    if not folders:
        raise ValueError(f"{path!r} has no concept sub-folders (expected <path>/<concept>/ with images).")
    meta = {}
    for key in folders:
        info_path = os.path.join(path, key, "concept.json")
        info = {}
        if os.path.isfile(info_path):
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
        name = info.get("name") or key.replace("_", " ")
        meta[key] = {"name": name, "concepts": [name] + [a for a in _as_list(info.get("aliases")) if a != name]}
    lookup = {k.lower(): k for k in folders} | {m["name"].lower(): k for k, m in meta.items()}

    def resolve(names, what):
        unknown = [n for n in names if n.strip().lower() not in lookup]
        if unknown:
            raise ValueError(f"Unknown {what} concept(s) {unknown} in {path!r}; available: "
                             f"{[meta[k]['name'] for k in folders]}.")
        return [lookup[n.strip().lower()] for n in names]

    forget_keys = resolve(list(forget_concepts), "forget")
    if not forget_keys:
        raise ValueError("Give at least one forget concept.")
    retain_keys = [k for k in folders if k not in forget_keys] if retain_concepts is None \
        else resolve(list(retain_concepts), "retain")
    both = sorted(set(forget_keys) & set(retain_keys))
    if both:
        raise ValueError(f"Concepts {both} are both forget and retain concepts.")

    def concept_rows(key):
        folder = os.path.join(path, key)
        name, concepts = meta[key]["name"], meta[key]["concepts"]
        image_files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        train_images = set(image_files if num_train_images is None else image_files[:num_train_images])
        qfile = next((os.path.join(folder, f) for f in _QUESTION_FILES if os.path.isfile(os.path.join(folder, f))), None)
        specs = _read_questions(qfile) if qfile else [
            {"question": default_question.format(name=name), "answer": default_answer.format(name=name),
             "image": "*", "kind": "name"}]
        if not image_files and any(s.get("image") for s in specs):
            raise ValueError(f"Concept folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}).")
        rows = []
        for n, spec in enumerate(specs):
            where = f"{qfile or folder} row #{n}"
            question, answer = _field(spec, "question", where), _field(spec, "answer", where)
            wanted = spec.get("image") or None
            if wanted == "*":
                files = image_files
            elif wanted is None:
                files = [None]
            elif wanted in image_files:
                files = [wanted]
            else:
                raise ValueError(f"{where}: image {wanted!r} is not an image file in {folder!r}.")
            for file in files:
                split = spec.get("split") or ("train" if file is None or file in train_images else "test")
                if split not in ("train", "test"):
                    raise ValueError(f"{where}: split must be 'train' or 'test', got {split!r}.")
                row = {"id": f"{key}/{n}" + (f"/{file}" if file else ""), "question": question, "answer": answer,
                       "image": os.path.join(folder, file) if file else None,
                       "concepts": list(concepts), "entity": key, "kind": spec.get("kind") or "qa", "heldout": split}
                if spec.get("options"):
                    row["options"] = _as_list(spec["options"])
                    row["answer_letter"] = _field(spec, "answer_letter", where)
                if spec.get("expected"):
                    row["expected"] = _as_list(spec["expected"])
                rows.append(row)
        return rows

    forget_rows, forget_test = _split_heldout([r for k in forget_keys for r in concept_rows(k)], "forget")
    retain_rows, retain_test = _split_heldout([r for k in retain_keys for r in concept_rows(k)], "retain")
    if not forget_rows:
        raise ValueError(f"The forget concept(s) {[meta[k]['name'] for k in forget_keys]} have no training rows.")
    eval_splits = {"forget": forget_rows, "forget_heldout": forget_test, "retain": retain_rows,
                   "retain_heldout": retain_test}
    eval_splits = {k: v for k, v in eval_splits.items() if v}
    return _lazy(BenchmarkData(
        name="mmubench", forget=forget_rows, retain=retain_rows or None, eval_splits=eval_splits,
        extras={"source": path, "forget_concepts": [meta[k]["name"] for k in forget_keys],
                "retain_concepts": [meta[k]["name"] for k in retain_keys]},
    ), max_eval_rows, seed)


def _split_heldout(rows: list[dict], role: str) -> tuple[list[dict], list[dict]]:
    train, test = [], []
    for row in rows:
        heldout = row.pop("heldout") == "test"
        (test if heldout else train).append({**row, "split": f"{role}_heldout" if heldout else role})
    return train, test


# --------------------------------------------------------------------------------------------------------------
# Registry (``--dataset mllmu_bench``, ``--dataset clear:/local/copy``, ``--dataset mmubench:/concepts``)
# --------------------------------------------------------------------------------------------------------------


def load_benchmark(
    spec: str,
    forget_split: str | None = None,
    retain_split: str | None = "retain",
    max_eval_rows: int | None = None,
    seed: int = 0,
) -> BenchmarkData:
    """Load a registered benchmark from a spec ``name`` or ``name:path_or_hub_name``.

    ``forget_split`` is the forget ratio for MLLMU-Bench / CLEAR (``"forget10"``, ``"forget_05"``, ``"5"``;
    default 10) and a comma-separated list of concept names for ``mmubench`` (whose spec needs the folder:
    ``mmubench:/path``). ``retain_split`` ``None`` or ``"none"`` drops the retain set.
    """
    name, _, source = spec.partition(":")
    if name not in BENCHMARKS:
        raise ValueError(f"Unknown benchmark {name!r}; registered: {list(BENCHMARKS)}.")
    retain = retain_split not in (None, "none")
    if name == "mmubench":
        if not source:
            raise ValueError("mmubench needs its concept folder: --dataset mmubench:/path/to/concepts.")
        concepts = [c for c in (forget_split or "").split(",") if c.strip()]
        if not concepts or re.fullmatch(r"forget_?\d+", concepts[0].strip()):
            raise ValueError("mmubench: give the concepts to forget as --forget_split 'Name One,Name Two'.")
        data = load_concept_folder(source, concepts, max_eval_rows=max_eval_rows, seed=seed)
        if not retain:
            data.retain = None
        return data
    loader, default_source = (load_mllmu_bench, MLLMU_HUB) if name == "mllmu_bench" else (load_clear, CLEAR_HUB)
    return loader(source or default_source, forget_split or 10, retain=retain, max_eval_rows=max_eval_rows, seed=seed)
