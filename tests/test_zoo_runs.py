from equimod_zoo.training import zoo_runs
from equimod_zoo.training.recipe import load_recipe


def test_every_campaign_pairs_share_one_budget_and_recipes_exist():
    for runs in zoo_runs.CAMPAIGNS.values():
        by_name = {run.name: run for run in runs}
        for run in runs:
            recipe = load_recipe(run.recipe, overrides=run.overrides)
            assert recipe.method.name == run.name.split("_r")[0]
            partner = by_name.get(run.name.replace("_equimod", "")) if "_equimod" in run.name else None
            if partner is not None:  # same budget, only EquiMod differs
                assert (partner.epochs, partner.batch_size, partner.data_limit, partner.overrides) == (
                    run.epochs, run.batch_size, run.data_limit, run.overrides)


def test_run_campaign_trains_each_run_and_resumes_from_a_checkpoint(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("equimod_zoo.training.trainer.train", lambda recipe, **kw: calls.append((recipe, kw)))
    (tmp_path / "simclr_equimod_r18_cifar10").mkdir()
    (tmp_path / "simclr_equimod_r18_cifar10" / zoo_runs.CHECKPOINT_FILE).write_bytes(b"")
    folders = zoo_runs.run_campaign("cpu", data="data", out=tmp_path)
    assert [f.name for f in folders] == ["simclr_r18_cifar10", "simclr_equimod_r18_cifar10"]
    assert [(recipe, kw["resume"], kw["data_limit"]) for recipe, kw in calls] == [
        ("simclr_r18_cifar10_cpu", False, 16_000), ("simclr_equimod_r18_cifar10_cpu", True, 16_000)]
