"""The ``sasq`` subcommands: each a thin function over the Python API, taking the parsed
arguments and returning the exit status. User mistakes raise ``UserError`` (one line, 2)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sasq import progress
from sasq.tools import cli_checks as checks
from sasq.tools.errors import UserError


def _load(args: argparse.Namespace):
    """The model: --model, else the one an --onnx export was made from, else the default."""
    from sasq.models import load_model

    return load_model(args.model, vae=getattr(args, "vae", None), var=getattr(args, "var", None))


def cmd_generate(args: argparse.Namespace) -> int:
    import dataclasses

    from sasq.engines.generate import (
        GenerateConfig,
        generate_many,
        labels_for,
        make_backend,
        save_tokens,
    )
    from sasq.tools.image_grid import check_grid_fits, grid_title, save_grid, save_images

    if args.out is None and args.out_dir is None:
        raise UserError("nothing to write: give --out GRID.png, --out-dir DIR, or both")
    if args.scale > 1 and args.out_dir is None:
        raise UserError("--scale enlarges the --out-dir copies: give --out-dir DIR")
    out = checks.out_file(args.out) if args.out else None
    out_dir = checks.out_folder(args.out_dir) if args.out_dir else None
    if args.backend == "torch" or args.onnx is None or {args.model, args.vae, args.var} != {None}:
        model = _load(args)
        cfg = model.cfg
        if args.backend != "torch" and args.onnx is not None:
            checks.made_from(model, args.onnx)
    else:  # an ONNX backend needs only the export and the config it records
        from sasq.exporter import verify
        from sasq.models import ModelConfig

        model, cfg = None, ModelConfig.from_dict(verify(args.onnx).model_config)
    asked = dict(cfg=args.cfg, top_k=args.top_k, top_p=args.top_p, more_smooth=args.more_smooth)
    given = {k: v for k, v in asked.items() if v is not None}
    sampling = dataclasses.replace(cfg.sampling, **given)
    if out is not None:
        check_grid_fits(cfg, args.n, args.nrow)  # before even the labels are made
    labels = labels_for(cfg, args.cls, args.n)
    from sasq.engines.trt_plan import BatchRange

    b = min(args.batch, len(labels))  # the batches this run makes: the ORT TensorRT EP's range
    backend = make_backend(args.backend, model, args.onnx, args.threads, args.engine,
                           BatchRange(1, b, b))  # fmt: skip
    gc = GenerateConfig(labels, args.seed, args.batch, sampling, progress=True)
    gen = generate_many(cfg, backend, gc)
    written: list = []
    if out is not None:
        title = grid_title(args.backend, f"seed {args.seed}", f"cfg {sampling.cfg:g}")
        names = [str(c) for c in labels]
        written.append(save_grid(gen.img, out, labels=names, nrow=args.nrow, title=title))
    if out_dir is not None:
        files = save_images(gen.img, out_dir, [str(c) for c in labels], args.scale)
        written.append(f"{out_dir}/ ({len(files)} PNGs)")
    if args.save_tokens:
        tokens = checks.out_file(args.save_tokens)
        tokens.parent.mkdir(parents=True, exist_ok=True)
        save_tokens(gen, labels, tokens)
        written.append(tokens)
    print(
        json.dumps(
            {
                "out": str(out) if out else None,
                "out_dir": str(out_dir) if out_dir else None,
                "n": len(labels),
                "backend": args.backend,
                "seed": args.seed,
                "sampling": vars(sampling),
            }
        )
    )
    progress.wrote("generate", *written)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from sasq.exporter import ExportConfig, export_model

    model = _load(args)
    out = Path(args.out)  # export_model builds beside it and swaps it into place
    cfg = ExportConfig(
        opset=args.opset,
        dynamic_batch=not args.static_batch,
        batch_size=args.batch_size,
        dtype=args.dtype,
    )
    notes, report = {}, {}
    if args.gps:
        from sasq.calib.gps import GPSConfig, apply_gps
        from sasq.exporter import provenance
        from sasq.exporter.qdq_config import BIT_WIDTHS

        notes[provenance.KEY] = provenance.model_fingerprint(model)  # GPS: same FP function
        w, a = BIT_WIDTHS[args.gps_bits]
        model, gps = apply_gps(
            model, GPSConfig(num_samples=args.gps_n, w_bits=w, a_bits=a, seed=args.seed)
        )
        notes["gps"] = gps
        report["gps"] = {k: v for k, v in gps.items() if k != "layers"}
        report["gps"]["layers"] = len(gps["layers"])
    manifest = export_model(model, out, cfg, notes)
    sizes = {k: v.bytes for k, v in manifest.files.items()}
    result = {"out": str(out), "opset": manifest.opset, "files": sizes, **report}
    print(json.dumps(result, indent=2))
    progress.wrote("export", out)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from sasq.calib.calibrate import CalibConfig, calibrate
    from sasq.quant.cache import save_cache

    out = checks.out_file(args.out)
    cfg = CalibConfig(
        num_samples=args.n,
        resample=args.resample,
        observer=args.observer,
        percentile=args.percentile,
        selection=args.selection,
        seed=args.seed,
        batch=args.batch,
        threads=args.threads,
    )
    result = calibrate(args.onnx, cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_cache(result.cache, out)
    tv = {
        si: {"plain": round(a, 4), "resampled": round(b, 4)}
        for si, (a, b) in result.tv_by_scale.items()
    }
    print(
        json.dumps(
            {
                "out": str(out),
                "tensors": len(result.cache.ranges),
                "tv_by_scale": tv,
                "seconds": round(result.seconds, 1),
                "peak_rss_mb": round(result.peak_rss_mb),
                "warnings": list(result.cache.warnings),
            },
            indent=2,
        )
    )
    progress.wrote("calibrate", out)
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from sasq.engines.lint import config_for_export, lint
    from sasq.exporter.manifest import verify
    from sasq.exporter.qdq_config import BIT_WIDTHS, QuantConfig, ShiftSumConfig
    from sasq.exporter.quantize import quantize
    from sasq.quant.cache import load_cache

    w, a = BIT_WIDTHS[args.bits]
    shift = ShiftSumConfig(
        enabled=args.shift_sum,
        mode=args.shift_sum_mode,
        budget=args.budget,
        max_n=args.max_n,
        fuse=not args.no_fuse,
        cache_budget=args.cache_budget,
    )
    cfg = QuantConfig(
        w_bits=w,
        a_bits=a,
        float_nodes=tuple(args.float_node),
        shift_sum=shift,
        static_per_step=args.per_step,
        target=args.target,
        kv_cache=args.kv_cache,
        kv_bits=args.kv_bits,
        precision=args.precision,
        rest=args.rest,
        u8s8=args.u8s8,
    )
    out = Path(args.out)  # quantize builds beside it and swaps it into place
    quantize(args.onnx, load_cache(args.calib), cfg, out)
    manifest = verify(out)
    quant = manifest.extra["quant"]
    violations = lint(out / manifest.graphs["step"].file, config_for_export(quant))
    for key, rec in quant.get("step_graphs", {}).items():  # step_long: its own float GEMMs
        kept = {**quant["kept_float"], **rec["kept_float"]}
        cfg_more = config_for_export({**quant, "kept_float": kept})
        violations += lint(out / manifest.graphs[key].file, cfg_more)
    forms = [f"{f['si']}:{f['form']}" for f in quant.get("attention_forms", [])]
    print(
        json.dumps(
            {
                "out": str(out),
                "bits": args.bits,
                "quantized": len(quant["quantized"]),
                "kept_float": len(quant["kept_float"]),
                "shift_sum": args.shift_sum,
                "target": cfg.target.value,
                "precision": cfg.precision.value,
                "rest": cfg.rest.value,
                "u8s8": quant["u8s8"]["form"] if cfg.target.value == "ort" else None,
                "kv_cache": f"{cfg.kv_cache.value} ({cfg.cache_bits} bits)",
                "attention_forms": " ".join(forms) or None,
                "step_graphs": sorted({s.step_graph for s in manifest.scales}),
                "lint": "PASSED"
                if not violations
                else f"{len(violations)} violation(s)"
                + (
                    " (expected: narrower than int8 is simulated with Clip)"
                    if w < 8 or a < 8
                    else ""
                ),
            },
            indent=2,
        )
    )
    progress.wrote("quantize", out)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from sasq.tools.bench import BenchConfig, run_bench, split_specs, to_markdown, write_report

    cfg = BenchConfig(
        backends=split_specs(args.backends),
        batch_sizes=tuple(args.batch_sizes),
        repeats=args.repeats,
        warmup=args.warmup,
        seed=args.seed,
        threads=args.threads,
        int8_kernels=args.int8_kernels,
    )
    out = checks.out_folder(args.out)
    result = run_bench(_load(args), args.onnx, cfg)
    paths = write_report(result, out)
    print(to_markdown(result))
    progress.wrote("bench", *paths)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from sasq.engines.trt_engine import EngineConfig, build_engine
    from sasq.engines.trt_plan import BatchRange

    out = checks.out_file(args.out)
    cfg = EngineConfig(
        batch=BatchRange.parse(args.batch_range),
        simulate=args.simulate,
        trt_version=args.trt_version,
        builder_optimization_level=args.opt_level,
        timing_cache=Path(args.timing_cache) if args.timing_cache else None,
    )
    plan = build_engine(args.onnx, out, cfg, rebuild=args.rebuild)
    print(json.dumps({"engine": str(plan), "bytes": plan.stat().st_size}))
    progress.wrote("build", plan)
    return 0


def _backend_from_spec(spec: str, model_args: argparse.Namespace):
    """``torch`` | ``ort=DIR`` | ``ort-cuda=DIR`` | ``trt=DIR,PLAN``."""
    from sasq.engines.generate import make_backend

    name, _, rest = spec.partition("=")
    if name == "torch":
        return make_backend("torch", _load(model_args))
    if not rest:
        raise UserError(f"backend {spec!r}: expected torch, ort=DIR, ort-cuda=DIR or trt=DIR,PLAN")
    onnx_dir, _, engine = rest.partition(",")
    return make_backend(name, None, onnx_dir, 0, engine or None)


def cmd_compare(args: argparse.Namespace) -> int:
    from sasq.exporter import verify
    from sasq.models import ModelConfig
    from sasq.tools.compare import (
        CompareConfig,
        compare_backends,
        describe_side,
        judge,
        to_markdown,
        write_report,
    )

    checks.check_compare_sources(args)
    sides = [describe_side(s) for s in (args.a, args.b)]
    a, b = _backend_from_spec(args.a, args), _backend_from_spec(args.b, args)
    onnx = next((s["folder"] for s in sides if s["folder"]), None)
    cfg = ModelConfig.from_dict(verify(onnx).model_config) if onnx else _load(args).cfg
    cc = CompareConfig(n=args.n, seed=args.seed, atol=args.atol, rtol=args.rtol)
    report = compare_backends(cfg, a, b, cc)
    judge(report, sides, cfg, cc)
    paths = write_report(report, checks.out_folder(args.out))
    print(to_markdown(report))
    progress.wrote("compare", *paths)
    return 0 if report["passed"] else 1


def cmd_profile(args: argparse.Namespace) -> int:
    from sasq.tools.op_profile import ProfileConfig, profile_export, to_markdown, write_report

    if args.batch < 1 or args.threads < 0:
        raise UserError("--batch must be at least 1 and --threads at least 0 (0: all cores)")
    checks.require_generation_fits(args.onnx, args.batch, "--batch")
    pc = ProfileConfig(args.batch, args.threads, args.seed, args.repeats, args.warmup)
    report = profile_export(args.onnx, pc)
    paths = write_report(report, checks.out_folder(args.out))
    print(to_markdown(report))
    progress.wrote("profile", *paths)
    return 0


def cmd_selftest(args: argparse.Namespace) -> int:
    from sasq.tools.gpu_selftest import gpu_selftest
    from sasq.tools.selftest import cpu_selftest

    if args.simulate and not args.gpu:
        raise UserError("--simulate runs the GPU checks on the contract simulator: add --gpu")
    out = Path(args.out)
    rc = gpu_selftest(out, args.simulate) if args.gpu else cpu_selftest(out)
    progress.wrote("selftest", args.out)
    return rc


def cmd_eval(args: argparse.Namespace) -> int:
    from sasq.tools.evaluate import ROWS, EvalConfig, evaluate, to_markdown, write_report
    from sasq.tools.quality import default_classifier

    model = _load(args)
    _embedded_or_refuse(model, "eval")
    ec = EvalConfig(
        bootstrap=args.bootstrap,
        per_class=args.per_class,
        bits=tuple(args.bits.split(",")),
        rows=tuple(args.rows.split(",")),
        calib_samples=args.calib_n,
        seed=args.seed,
    )
    from sasq.exporter.qdq_config import BIT_WIDTHS

    unknown = [b for b in ec.bits if b not in BIT_WIDTHS]
    if unknown:
        raise UserError(f"unknown bit widths {unknown}; choose from {', '.join(BIT_WIDTHS)}")
    if unknown := [r for r in ec.rows if r not in ROWS]:  # an unknown row ran as 'plain'
        raise UserError(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    result = evaluate(model, default_classifier(), ec)
    paths = write_report(result, checks.out_folder(args.out))
    print(to_markdown(result))
    progress.wrote("eval", *paths)
    return 0


def cmd_train_default(args: argparse.Namespace) -> int:
    from sasq.models.config import PRESETS
    from sasq.tools.train_default import TrainConfig, train_default

    tc = TrainConfig(
        seed=args.seed,
        vae_steps=args.vae_steps,
        var_steps=args.var_steps,
        var_batch=args.var_batch,
        threads=args.threads,
    )
    metrics = train_default(checks.out_folder(args.out), tc, PRESETS[args.preset](), args.preset)
    print(json.dumps(metrics, indent=2))
    progress.wrote("train-default", args.out)
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from sasq.engines.lint import Coverage, Target, config_for_export, format_violations, lint

    path = Path(args.model_onnx)
    if not path.is_file():
        raise UserError(f"no such ONNX file: {path}")
    quant = checks.quant_of_export(path)
    cfg = config_for_export(
        quant,
        float_nodes=tuple(args.float_node) + tuple(quant.get("kept_float", {})),
        min_opset=args.min_opset,
        coverage=Coverage.TOUCHED if args.touched_only else Coverage.ALL,
        target=Target(args.target or quant.get("target", "tensorrt")),
        trt_version=args.trt_version,
    )
    try:
        violations = lint(path, cfg)
    except UserError:
        raise
    except Exception as e:  # onnx raises DecodeError and friends for a file that is not ONNX
        raise UserError(f"{path}: cannot be read as ONNX ({type(e).__name__})") from None
    if cfg.target == Target.TENSORRT:
        t = cfg.support
        print(f"ops and dtypes checked against {t.label()}'s ONNX parser table ({t.source_url})")
    print(format_violations(violations, cfg.target))
    return 1 if violations else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sasq.tools.demo import run_demo

    report, summary = run_demo(Path(args.out), model_dir=args.model, threads=args.threads)
    print(summary)  # the report holds the tables
    progress.wrote("demo", args.out)
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from sasq.engines.generate import make_backend
    from sasq.tools.edit import (
        EditConfig,
        EditTask,
        TokenRule,
        check_class,
        edit,
        masked_psnr,
        save_edit_sheet,
    )
    from sasq.tools.edit_files import load_inputs
    from sasq.tools.image_grid import grid_title

    out = checks.out_file(args.out)
    model = _load(args)  # the VQVAE encoder runs host-side in torch for every backend
    task = EditTask(args.task)
    check_class(model.cfg, args.cls, task)
    from sasq.models.memory import generation_estimate, require_fits

    require_fits(generation_estimate(model.cfg, args.n), f"editing {args.n} samples", "lower --n")
    image, mask, resized = load_inputs(args.image, args.mask, model.cfg, task)
    if args.backend != "torch" and args.onnx is not None:
        checks.made_from(model, args.onnx)  # the host-side encoder is --model's
    backend = make_backend(args.backend, model, args.onnx, args.threads, args.engine)
    ec = EditConfig(
        task, args.cls, args.seed, args.n, TokenRule(args.rule), reencode=not args.no_reencode
    )
    res = edit(model.cfg, model.vqvae, backend, image, mask, ec)
    cond = "uncond" if args.cls is None else f"class {args.cls}"
    title = grid_title(task.value, cond, args.backend, f"seed {args.seed}")
    save_edit_sheet(res, out, args.n, title=title)
    keep = res.mask.repeat_interleave(args.n, 0) == 0
    recon = res.recon.repeat_interleave(args.n, 0)
    print(
        json.dumps(
            {
                "out": str(out),
                "task": task.value,
                "backend": args.backend,
                "seed": args.seed,
                "n": args.n,
                "resized": resized,
                "sampled_tokens": [int(t[0].sum()) for t in res.inside],
                "psnr_outside_db": round(masked_psnr(res.img, recon, keep), 2)
                if bool(keep.any())
                else None,  # the whole image was regenerated
            }
        )
    )
    for note in resized:  # after the work: a refusal stays one line
        progress.note("edit", note)
    progress.wrote("edit", out)
    return 0


def _embedded_or_refuse(model, what: str) -> None:
    """The digits classifier scores the embedded models only."""
    from sasq.models import EMBEDDED

    if model.path is None or model.path.resolve() not in {d.resolve() for d in EMBEDDED.values()}:
        raise UserError(
            f"{what} scores with the digits classifier: only the embedded models "
            f"({', '.join(EMBEDDED)})"
        )


def cmd_sweep_budget(args: argparse.Namespace) -> int:
    from sasq.tools.budget_sweep import SweepConfig, sweep_budget, write_report
    from sasq.tools.quality import default_classifier

    model = _load(args)
    _embedded_or_refuse(model, "sweep-budget")
    kv: list[int | None] = []
    for t in args.kv_bits.split(","):
        if t.strip() == "A":
            kv.append(None)
        elif t.strip().isdigit() and 2 <= int(t) <= 8:
            kv.append(int(t))
        else:
            raise UserError(f"--kv-bits: {t!r} is neither A nor a width in 2..8")
    sc = SweepConfig(
        budgets=args.budgets,
        bits=tuple(args.bits.split(",")),
        kv_bits=tuple(kv),
        per_class=args.per_class,
        calib_samples=args.calib_n,
        seed=args.seed,
        bootstrap=args.bootstrap,
        bench_batch=args.bench_batch,
        bench_repeats=args.repeats,
        threads=args.threads,
    )
    out = checks.out_folder(args.out)
    paths = write_report(sweep_budget(model, default_classifier(), sc), out)
    progress.wrote("sweep-budget", *paths)
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from sasq.tools.attention_stats import (
        AttentionConfig,
        attention_concentration,
        to_markdown,
        write_report,
    )

    if args.random is not None:
        if args.model or args.vae or args.var:
            raise UserError("--random builds its own model: drop --model / --vae / --var")
        import torch

        from sasq.models import build, official

        torch.manual_seed(args.seed)
        model = build(official(args.random))
        model.path = None
    else:
        model = _load(args)
    ac = AttentionConfig(images=args.n, batch=args.batch, seed=args.seed)
    r = attention_concentration(model, ac)
    if args.random is not None:
        r["model"] = f"random VAR-d{args.random}"
    paths = write_report(r, checks.out_folder(args.out))
    print(to_markdown(r))
    progress.wrote("attention", *paths)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sasq.tools.serve import ServeConfig, serve_forever

    sc = ServeConfig(
        onnx_dir=Path(args.onnx),
        backend=args.backend,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_queue_delay_ms=args.max_queue_delay_ms,
        instances=args.instances,
        threads=args.threads,
        engine=None if args.engine is None else Path(args.engine),
        more_smooth=args.more_smooth,
    )
    if args.write_repo is not None:
        from sasq.tools.triton_repo import write_repository

        model = write_repository(sc, Path(args.write_repo))
        print(json.dumps({"repository": str(Path(args.write_repo)), "model": str(model)}))
        return 0
    print(json.dumps(serve_forever(sc)))
    return 0


def cmd_loadtest(args: argparse.Namespace) -> int:
    from sasq.tools.loadtest import LoadConfig, run_loadtest, write_report

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: is a file; --out needs a folder")
    lc = LoadConfig(
        url=args.url,
        concurrency=tuple(args.concurrency),
        duration_s=args.duration,
        requests=args.requests,
        warmup=args.warmup,
        seed=args.seed,
        timeout_s=args.timeout,
        malformed=args.malformed,
    )
    r = run_loadtest(lc)
    paths = write_report(r, out)
    print(json.dumps({"out": [str(p) for p in paths], "levels": r["levels"]}))
    failed = sum(lv["failed"] for lv in r["levels"])
    accepted = sum(lv["malformed"]["accepted"] for lv in r["levels"])
    ok = failed == 0 and accepted == 0
    print(
        f"loadtest: {'PASSED' if ok else 'FAILED'} ({failed} failed valid requests, "
        f"{accepted} malformed requests answered as if valid)"
    )
    return 0 if ok else 1
