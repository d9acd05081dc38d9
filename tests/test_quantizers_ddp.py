"""Codebook usage under several processes: in training every quantiser reports the usage and
perplexity of the global batch (all processes' codes together), the same number in every process;
evaluation stays per process (it may run in one process alone); dead-code restarts of VQ and SimVQ
leave the same codebook in every process. Two gloo processes on CPU."""
from __future__ import annotations

import torch
import torch.multiprocessing as mp

from vqkit.config import FSQConfig, RFSQConfig, SimVQConfig, VQConfig
from vqkit.quantizers import build_quantizer

CONFIGS = {"simvq": SimVQConfig(codebook_size=64, dim=4), "vq": VQConfig(codebook_size=64, dim=4),
           "fsq": FSQConfig(levels=[8, 5, 5, 5]), "rfsq": RFSQConfig(levels=[8, 5, 5, 5], stages=2)}
RESTARTING = {"vq": VQConfig(codebook_size=64, dim=4, restart_dead_codes=True),
              "simvq": SimVQConfig(codebook_size=64, dim=4, restart_dead_codes=True)}


def _ddp_case(kind: str, rank: int):
    """The same quantiser in every process (seed 0), and process `rank`'s own data (of its own size)."""
    torch.manual_seed(0)
    q = build_quantizer(CONFIGS[kind])
    if kind == "vq":
        q.codebook.data.normal_()
    return q, torch.randn(2 + rank, 4, 6, generator=torch.Generator().manual_seed(100 + rank)) * 2   # unequal halves


def _ddp_worker(rank: int, world: int, init: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        results = {}
        for kind in CONFIGS:
            q, z = _ddp_case(kind, rank)
            results[kind] = {"train": q.train()(z).stats, "eval": q.eval()(z).stats}
        for kind, cfg in RESTARTING.items():   # every code dead: each process's batch would re-seed others
            torch.manual_seed(0)
            q, z = build_quantizer(cfg).train(), _ddp_case(kind, rank)[1]
            q.usage_ema.zero_()
            torch.manual_seed(rank)   # each process would pick other latents
            results[f"{kind} restarted"] = {"n": q(z).stats["restarted"], "codes": q._codes().detach()}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_usage_is_the_global_batchs_under_two_processes(tmp_path):
    """Each process quantises different data; in training both report the usage and perplexity of
    the two halves together (what one process computes on the whole batch)."""
    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/rendezvous", str(tmp_path)), nprocs=2, join=True)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for kind in CONFIGS:
        (q, z0), (_, z1) = _ddp_case(kind, 0), _ddp_case(kind, 1)
        whole = q.eval()(torch.cat([z0, z1])).stats
        local = [q(z0).stats, q(z1).stats]
        # the halves differ, so a per-process number would show
        assert (local[0]["usage"], local[0]["perplexity"]) != (local[1]["usage"], local[1]["perplexity"]), kind
        keys = [k for k in whole if k.startswith(("usage", "perplexity"))]   # rfsq: pooled and per stage
        for r in range(2):
            for key in keys:
                assert torch.equal(got[r][kind]["train"][key], got[0][kind]["train"][key]), (kind, key)
                torch.testing.assert_close(got[r][kind]["train"][key], whole[key])
                torch.testing.assert_close(got[r][kind]["eval"][key], local[r][key])
    for kind in RESTARTING:
        a, b = got[0][f"{kind} restarted"], got[1][f"{kind} restarted"]
        assert float(a["n"]) == float(b["n"]) == 64, kind
        assert torch.equal(a["codes"], b["codes"]), kind
        # the new codes are process 0's latents, not process 1's
        h0, h1 = (_ddp_case(kind, r)[1].permute(0, 2, 1).reshape(-1, 4) for r in range(2))
        near = lambda h: (a["codes"][:, None] - h[None]).abs().amax(-1).min(-1).values.max()  # noqa: E731
        assert near(h0) < 1e-4 and near(h1) > 1e-2, kind
