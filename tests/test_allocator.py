"""keep_freed_memory: glibc's thresholds raised within a training epoch, glibc's defaults and a trim after."""
import pytest

from recbole_llm import allocator


class FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, parameter, value):
        self.calls.append(("mallopt", parameter, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


def test_thresholds_raised_within_and_restored_after(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    libc = FakeLibc()
    with allocator.keep_freed_memory(libc=libc) as kept:
        assert kept
        assert libc.calls == [("mallopt", allocator.M_MMAP_THRESHOLD, allocator.KEEP),
                              ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.KEEP)]
    assert libc.calls[2:] == [("mallopt", allocator.M_MMAP_THRESHOLD, allocator.GLIBC_DEFAULT),
                              ("mallopt", allocator.M_TRIM_THRESHOLD, allocator.GLIBC_DEFAULT), ("malloc_trim", 0)]


def test_restored_when_the_epoch_fails(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    libc = FakeLibc()
    with pytest.raises(RuntimeError), allocator.keep_freed_memory(libc=libc):
        raise RuntimeError("a step failed")
    assert libc.calls[-1] == ("malloc_trim", 0)


@pytest.mark.parametrize("enabled, environment", [(False, None), (True, "4294967296")])
def test_off_or_the_process_own_choice_leaves_malloc_alone(monkeypatch, enabled, environment):
    if environment:
        monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", environment)
    else:
        monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    libc = FakeLibc()
    with allocator.keep_freed_memory(enabled, libc=libc) as kept:
        assert not kept
    assert libc.calls == []


def test_the_real_libc_accepts_the_thresholds(monkeypatch):
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    if allocator._glibc() is None:
        pytest.skip("not a glibc system: nothing to set")
    with allocator.keep_freed_memory() as kept:
        assert kept


def test_a_paper_model_epoch_runs_within_it(tiny, monkeypatch):
    """CatalogTrainer's epoch enters keep_freed_memory with the model's setting."""
    from conftest import build
    from recbole_llm import lazy_adam

    seen = []
    original = lazy_adam.keep_freed_memory
    monkeypatch.setattr(lazy_adam, "keep_freed_memory", lambda enabled: seen.append(enabled) or original(enabled))
    for setting in (True, False):
        config, _, (train, _, _), net = build("PaperSASRec", tiny, train_mode="all_positions",
                                              train_keep_freed_memory=setting)
        trainer = lazy_adam.CatalogTrainer(config, net)
        trainer._train_epoch(train, 0)
    assert seen == [True, False]
