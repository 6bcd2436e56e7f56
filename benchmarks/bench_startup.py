"""Where the time to the first optimizer step goes: hftrain vs transformers' Trainer, in CPU seconds.

    python benchmarks/bench_startup.py                    # both tables, 5 fresh processes per row, median
    python benchmarks/bench_startup.py --repeats 3 --only phases
    python benchmarks/bench_startup.py --baseline 94e3cdd # + hftrain as of that commit in the phases table

``phases``: one fresh process per run of ``bench_throughput.py``'s script (small BERT, batch 16, 1 torch thread),
cut where the CPU time of the process (user + sys, getrusage) is read: ``import torch``, the framework's
``from ... import Trainer, TrainerCallback, TrainingArguments``, the model and data (the user's transformers
imports and ``BertForSequenceClassification(config)``), ``TrainingArguments(...)``, ``Trainer(...)``, and ``train()``
to the end of the first optimizer step. CPU time, not wall time: other load on a shared machine moves it less.

``imports``: what each framework imports beyond what the script itself needs. One fresh process imports torch,
``transformers.TrainingArguments`` and ``BertForSequenceClassification`` (as the script does), then each listed
module in turn; each row is the CPU time of that one import, so a module already pulled in by an earlier row costs
0 there. hftrain's rows are Lightning's import chain (Lightning imports torchmetrics to read its version, and
torchmetrics imports scipy.signal and matplotlib.pyplot where they are installed); transformers' are its
Trainer's (datasets, and pandas through it).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

PHASES_CHILD = r"""
import json, os, resource, sys, tempfile
def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
marks = [("interpreter", cpu())]
import torch
torch.set_num_threads(1)
marks.append(("import torch", cpu()))
if {framework!r} == "hftrain":
    from hftrain import Trainer, TrainerCallback, TrainingArguments
else:
    from transformers import Trainer, TrainerCallback, TrainingArguments
marks.append(("import Trainer, TrainingArguments", cpu()))
sys.path.insert(0, {here!r})
from bench_throughput import make_model_and_data
model, dataset = make_model_and_data(64, "small")
marks.append(("model and data", cpu()))
args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=16, num_train_epochs=1,
                         save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
                         logging_strategy="no", use_cpu=True)
marks.append(("TrainingArguments(...)", cpu()))
class FirstStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        marks.append(("train() to the first step", cpu()))
        print("PHASES " + json.dumps(marks), flush=True)
        os._exit(0)
trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[FirstStep()])
marks.append(("Trainer(...)", cpu()))
trainer.train()
"""

IMPORTS_CHILD = r"""
import importlib, json, resource
def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
costs = []
for name in {modules!r}:
    before = cpu()
    try:
        importlib.import_module(name)
    except ImportError:
        costs.append((name, None))
        continue
    costs.append((name, cpu() - before))
print("IMPORTS " + json.dumps(costs), flush=True)
"""

SCRIPT_NEEDS = ["torch", "transformers.training_args", "transformers.models.bert.modeling_bert"]
FRAMEWORK_IMPORTS = {
    "hftrain": ["scipy.signal", "matplotlib.pyplot", "torchmetrics", "lightning", "hftrain.trainer"],
    "transformers": ["pandas", "datasets", "accelerate", "transformers.trainer"],
}


def run(code, source, tag):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], cwd=source, env=env, capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1:])
    sys.exit(f"child failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def phases(columns, repeats):
    runs = {name: [] for name in columns}
    for r in range(repeats):
        for name in list(columns) if r % 2 == 0 else list(columns)[::-1]:  # alternate the order against drift
            framework, source = columns[name]
            marks = run(PHASES_CHILD.format(framework=framework, here=HERE), source, "PHASES")
            runs[name].append({b[0]: b[1] - a[1] for a, b in zip(marks, marks[1:])} | {"total": marks[-1][1]})
    print(f"\nCPU seconds per phase, process start to the end of the first optimizer step (median of {repeats}):")
    print(f"{'phase':<36}" + "".join(f"{name:>18}" for name in columns))
    for phase in ["interpreter", *runs[next(iter(columns))][0]]:
        if phase == "interpreter":
            continue
        print(f"{phase:<36}" + "".join(f"{statistics.median(x[phase] for x in runs[n]):>18.2f}" for n in columns))
    totals = {n: statistics.median(x["total"] for x in runs[n]) for n in columns}
    if "transformers" in totals:
        print("total ÷ transformers' total: " + ", ".join(
            f"{n} {totals[n] / totals['transformers']:.3f}" for n in columns if n != "transformers"))


def imports(repeats):
    print(f"\nCPU seconds of each import once the script's own imports are done ({', '.join(SCRIPT_NEEDS)}; "
          f"median of {repeats}):")
    for framework, modules in FRAMEWORK_IMPORTS.items():
        runs = [dict(run(IMPORTS_CHILD.format(modules=SCRIPT_NEEDS + modules), REPO, "IMPORTS"))
                for _ in range(repeats)]
        total = 0.0
        for name in modules:
            values = [r[name] for r in runs]
            if None in values:
                print(f"  {framework:<13} {name:<28} not installed")
                continue
            total += statistics.median(values)
            print(f"  {framework:<13} {name:<28} {statistics.median(values):6.2f}")
        print(f"  {framework:<13} {'together':<28} {total:6.2f}")


def checkout(rev):
    """``rev``'s hftrain package in a temporary folder (``git archive``)."""
    folder = tempfile.mkdtemp(prefix="bench-hftrain-")
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "hftrain"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    return folder


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", choices=("phases", "imports"), help="one of the two tables")
    p.add_argument("--baseline", help="also hftrain as of this git commit, in the phases table")
    a = p.parse_args()
    columns = {"hftrain": ("hftrain", REPO)}
    if a.baseline:
        columns[f"hftrain@{a.baseline}"] = ("hftrain", checkout(a.baseline))
    columns["transformers"] = ("transformers", REPO)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load1 at start {os.getloadavg()[0]:.1f}")
    if a.only != "imports":
        phases(columns, a.repeats)
    if a.only != "phases":
        imports(a.repeats)
    print(f"load1 at end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
