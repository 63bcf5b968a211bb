"""What a search may vary, its sampler and pruner, and a study continued only as it began."""

import pytest

from resnet_jax.configs import digits
from resnet_jax.errors import UserError
from resnet_jax.experiments import search, space, trials

pytest.importorskip("optuna", reason="the tune extra (not in the lowest-versions lane's [train])")


def test_specs_become_typed_distributions():
    optuna = trials.optuna()
    searched = space.parse_space(
        ["learning_rate=loguniform:0.01:1", "label_smoothing=uniform:0:0.2",
         "warmup_epochs=uniform:0:2", "grad_accumulation_steps=int:1:4",
         "model=resnet8,resnet20", "nesterov=true,false"], digits.get_config())
    assert searched == {
        "learning_rate": optuna.distributions.FloatDistribution(0.01, 1.0, log=True),
        "label_smoothing": optuna.distributions.FloatDistribution(0.0, 0.2),
        "warmup_epochs": optuna.distributions.FloatDistribution(0.0, 2.0),
        "grad_accumulation_steps": optuna.distributions.IntDistribution(1, 4),
        "model": optuna.distributions.CategoricalDistribution(["resnet8", "resnet20"]),
        "nesterov": optuna.distributions.CategoricalDistribution([True, False])}


@pytest.mark.parametrize("specs, message", [
    (["learnin_rate=loguniform:0.01:1"], "--space learnin_rate: not a config key"),
    (["learning_rate"], "expected KEY=SPEC"),
    (["learning_rate=loguniform:0:1"], "a log scale needs LOW > 0"),
    (["learning_rate=uniform:1:0.1"], "LOW must be below HIGH"),
    (["learning_rate=uniform:a:b"], "LOW and HIGH must be numbers"),
    (["learning_rate=loguniform:0.1"], "expected loguniform:LOW:HIGH"),
    (["learning_rate=int:1:3"], "int ranges are for integer keys"),
    (["batch_size=uniform:16:64"], "an integer key; use int:LOW:HIGH"),
    (["model=uniform:1:2"], "a uniform range needs a numeric key"),
    (["learning_rate=fast,slow"], "--space learning_rate: 'fast' is not a number"),
    (["model=resnet8,resnet9"], "model='resnet9': "),  # the training's own check, up front
    (["learning_rate=0.1", "learning_rate=0.2"], "--space learning_rate is given twice"),
    (["learning_rate=0.1,0.2,0.10"], r"--space learning_rate: 0.1 is given twice among the "
                                     r"choices"),
    ([], "give at least one --space"),
])
def test_spaces_that_cannot_be_searched_are_one_line_errors(specs, message):
    with pytest.raises(space.SpaceError, match=message):
        space.parse_space(specs, digits.get_config())


def test_grid_sampler_needs_choices_and_pruners_need_evaluations():
    config = digits.get_config()
    ranges = space.parse_space(["learning_rate=loguniform:0.01:1"], config)
    with pytest.raises(UserError, match="needs a list of choices for every key; learning_rate"):
        search.create_sampler("grid", ranges, 4, None)
    grid = space.parse_space(["learning_rate=0.1,0.2", "seed=0,1"], config)
    with pytest.raises(UserError, match="the grid has 4 points; ask for at most --trials 4"):
        search.create_sampler("grid", grid, 5, None)
    assert isinstance(search.create_sampler("grid", grid, 4, None),
                      trials.optuna().samplers.GridSampler)
    assert config.eval_every_steps <= 0
    with pytest.raises(UserError, match="set --config.eval_every_steps"):
        search.create_pruner("asha", config)
    config.eval_every_steps = 50
    pruner = search.create_pruner("asha", config)
    assert pruner._min_resource == 50 and pruner._reduction_factor == 3


def test_a_study_continues_only_with_its_space_and_objective(tmp_path):
    study = trials.open_study(str(tmp_path), "", "s", "maximize")
    search.check_study(study, {"learning_rate": "loguniform:0.01:1"}, "eval_top1")
    search.check_study(study, {"learning_rate": "loguniform:0.01:1"}, "eval_top1")  # again
    with pytest.raises(UserError, match="this study searches"):
        search.check_study(study, {"learning_rate": "loguniform:0.01:2"}, "eval_top1")
    with pytest.raises(UserError, match="objective is eval_top1, not eval_loss"):
        search.check_study(study, {"learning_rate": "loguniform:0.01:1"}, "eval_loss")
    with pytest.raises(UserError, match="created to maximize its objective, not to minimize"):
        trials.open_study(str(tmp_path), "", "s", "minimize")


def test_a_diverged_trial_fails_and_the_results_put_the_best_first(tmp_path):
    """In-process, with a stand-in for the training: the runner's own bookkeeping."""
    import json
    import os

    from resnet_jax import errors

    config = digits.get_config()
    grid = space.parse_space(["learning_rate=0.1,100,0.3,0.2"], config)
    study = trials.open_study(str(tmp_path), "", "s", "maximize",
                              search.create_sampler("grid", grid, 4, 0))
    started = []

    def train(trial_config, directory, *, on_evaluation):
        started.append(trial_config.learning_rate)
        if trial_config.learning_rate > 10:
            raise errors.Diverged("training diverged at step 3: ...")
        with open(os.path.join(directory, "metrics.jsonl"), "w") as f:
            for step, top1 in ((5, trial_config.learning_rate), (10, 0.05)):
                f.write(json.dumps({"step": step, "split": "eval", "loss": 1.0,
                                    "top1": top1}) + "\n")
        return {"step": 10}

    worker = trials.Search(study, str(tmp_path), 4, grid, config, train=train)
    assert trials.work(worker, say=lambda line: None) == 4
    assert trials.work(worker, say=lambda line: None) == 0  # the study is full
    assert sorted(started) == [0.1, 0.2, 0.3, 100.0]
    rows = search.write_results(study, worker)
    assert [(r["learning_rate"], r["state"], r["steps"]) for r in rows] == [
        (0.3, "COMPLETE", 10), (0.2, "COMPLETE", 10), (0.1, "COMPLETE", 10),
        (100.0, "FAIL", 0)]
    assert [r["value"] for r in rows[:3]] == [0.3, 0.2, 0.1]  # the best evaluation, not the last
    failed = rows[3]["workdir"]
    assert "diverged at step 3" in open(os.path.join(failed, trials.DIVERGED_FILE)).read()
    header = open(tmp_path / "results.md").readline()
    assert header == "| trial | state | value | steps | learning_rate | workdir | note |\n"


def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path):
    with pytest.raises(UserError, match=r"^--storage bogus://x: Can't load plugin"):
        trials.open_study(str(tmp_path), "bogus://x", "s", "maximize")
