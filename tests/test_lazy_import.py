"""``import unlearn_trainer`` is light: the public names load their subpackage on first use (PEP 562), so importing
the package, ``unlearn_trainer.testing`` or ``unlearn_trainer.losses`` does not import transformers' ``Trainer``,
peft, bitsandbytes or DeepSpeed (seconds of start-up and their start-up messages).

Checked on ``sys.modules`` of a fresh interpreter, never on a clock.
"""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import unlearn_trainer

ROOT = Path(unlearn_trainer.__file__).resolve().parent.parent
INIT = Path(unlearn_trainer.__file__)

# Loaded only once a trainer is used.
TRAINER_STACK = ("transformers.trainer", "peft", "bitsandbytes", "deepspeed", "trl")


def _loaded_after(code: str) -> set[str]:
    """The top-level and watched modules in ``sys.modules`` after running ``code`` in a fresh interpreter."""
    watched = (*TRAINER_STACK, "torch", "transformers", "datasets")
    script = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_import_package_loads_no_backend():
    assert _loaded_after("import unlearn_trainer; unlearn_trainer.__version__") == set()


@pytest.mark.parametrize("code", ["from unlearn_trainer import testing", "import unlearn_trainer.losses",
                                  "from unlearn_trainer import losses"])
def test_testing_and_losses_do_not_load_the_trainer_stack(code):
    assert not _loaded_after(code) & set(TRAINER_STACK)


def test_using_a_trainer_loads_it():
    """The positive control: the check above sees the trainer stack when it is imported."""
    loaded = _loaded_after("from unlearn_trainer import NPOTrainer\nassert NPOTrainer.__name__ == 'NPOTrainer'")
    assert {"transformers.trainer", "peft"} <= loaded


def test_every_public_name_resolves_to_its_subpackage_object():
    assert set(unlearn_trainer.__all__) == {"__version__", *unlearn_trainer._LAZY_IMPORTS}
    for name, subpackage in unlearn_trainer._LAZY_IMPORTS.items():
        module = importlib.import_module(f"unlearn_trainer.{subpackage}")
        assert getattr(unlearn_trainer, name) is getattr(module, name)
    assert set(unlearn_trainer.__all__) <= set(dir(unlearn_trainer))


def test_submodules_are_attributes_and_unknown_names_raise():
    assert unlearn_trainer.evaluation.metrics.rouge_l is not None
    assert {"testing", "losses", "trainers", "evaluation"} <= set(dir(unlearn_trainer))
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchTrainer'"):
        unlearn_trainer.NoSuchTrainer  # noqa: B018
    with pytest.raises(ImportError, match="NoSuchTrainer"):
        from unlearn_trainer import NoSuchTrainer  # noqa: F401


def test_type_checking_block_mirrors_the_lazy_mapping():
    """Type checkers and tests/test_import_graph.py read the ``if TYPE_CHECKING:`` imports; the runtime reads
    ``_LAZY_IMPORTS``: both must name the same objects from the same subpackages."""
    tree = ast.parse(INIT.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in ast.walk(block) if isinstance(node, ast.ImportFrom)
                for alias in node.names if node.level == 1}
    assert imported == unlearn_trainer._LAZY_IMPORTS
