"""`study schedule NAME --layers L (--T T | --W W) [--steps 0,500,1000] [--json] [--plot FILE.png]`.

Prints (or plots) the ProRes multipliers alpha(l, t) of any schedule from study.prores, the one implementation
that training uses. NAME is a paper name or an official-code alias. T and W are ignored by `none` and fix-*.
"""

from __future__ import annotations

import json

import numpy as np

from study import prores
from study.errors import ConfigError, unknown_name

DEFAULT_UNFIXED_RANGE = 1000  # t range plotted for schedules without warmup (fix-*, none)


def register(sub) -> None:
    p = sub.add_parser("schedule", help="print or plot a ProRes schedule alpha(l, t)")
    p.add_argument("name", metavar="NAME", help=f"schedule: {', '.join(prores.SCHEDULES)} (or an official alias)")
    p.add_argument("--layers", "-L", type=int, required=True, help="number of layers L")
    unit = p.add_mutually_exclusive_group()
    unit.add_argument("--T", type=float, default=None, help="warmup unit of the first layer (paper's T)")
    unit.add_argument("--W", type=float, default=None, help="total warmup steps (official flag; W = T·L, equal: T)")
    p.add_argument("--steps", default=None, help="comma-separated steps (default: 0, W/4, W/2, 3W/4, W)")
    p.add_argument("--json", action="store_true", help='print a JSON list of {"step": s, "alpha": [L values]}')
    p.add_argument("--plot", metavar="FILE.png", default=None, help="draw alpha(l, t) for t in [0, 1.25·W]")
    p.set_defaults(func=run)


def resolve(name: str, layers: int, T: float | None, W: float | None) -> tuple[str, float | None, float | None]:
    """(paper name, T, W) with the missing one of T/W derived; ConfigError for bad input."""
    try:
        name = prores.canonical(name)
    except KeyError:
        raise unknown_name("schedule", name, prores.SCHEDULES, key="NAME") from None
    if layers < 1:
        raise ConfigError(f"must be >= 1, got {layers}", key="--layers")
    for key, value in (("--T", T), ("--W", W)):
        if value is not None and not value > 0:
            raise ConfigError(f"must be > 0, got {value:g}", key=key)
    if not prores.is_warmed(name):
        return name, None, None
    if T is None and W is None:
        raise ConfigError(f"schedule '{name}' needs --T (or --W)", key="--T")
    if T is None:
        T = prores.unit_from_total(name, layers, W)
    return name, T, prores.total_warmup(name, layers, T)


def parse_steps(text: str | None, W: float | None) -> list[int]:
    if text is None:
        return [0] if W is None else sorted({int(round(W * k / 4)) for k in range(5)})
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated integers, got {text!r}", key="--steps") from None
    if not steps or min(steps) < 0:
        raise ConfigError(f"expected steps >= 0, got {text!r}", key="--steps")
    return steps


def plot(name: str, layers: int, T: float | None, t_max: float | None = None):
    """matplotlib Figure of alpha(l, t), one line per layer coloured by depth, t from 0 to 1.25·W.

    The t grid holds every kink T·l (and T·(l−1)) so piecewise-linear schedules are drawn exactly.
    """
    from matplotlib import cm, colormaps, colors
    from matplotlib.figure import Figure

    name = prores.canonical(name)
    W = prores.total_warmup(name, layers, T) if prores.is_warmed(name) else None
    if t_max is None:
        t_max = 1.25 * W if W is not None else DEFAULT_UNFIXED_RANGE
    t = np.linspace(0.0, t_max, 501)
    if T is not None:
        kinks = T * np.arange(0, layers + 2)
        t = np.union1d(t, kinks[kinks <= t_max])
    values = np.stack([prores.alphas(name, s, layers, T) for s in t])  # [len(t), L]

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    cmap, norm = colormaps["viridis"], colors.Normalize(1, max(layers, 2))
    for l in range(1, layers + 1):
        ax.plot(t, values[:, l - 1], color=cmap(norm(l)), lw=1.2, label=f"l={l}")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="layer l")
    ax.set_xlabel("optimizer step t")
    ax.set_ylabel("alpha(l, t)")
    ax.set_ylim(-0.03, 1.05)
    ax.set_xlim(0, t_max)
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    ax.set_title(f"ProRes schedule {name}: L={layers}, T={fmt(T)}, W={fmt(W)}")
    return fig


def run(args) -> int:
    name, T, W = resolve(args.name, args.layers, args.T, args.W)
    steps = parse_steps(args.steps, W)
    rows = prores.table(name, steps, args.layers, T)
    if args.plot:
        from study.extras import require_extra
        require_extra("figures", "study schedule --plot")
        plot(name, args.layers, T).savefig(args.plot, dpi=120)
    if args.json:
        print(json.dumps(rows))
        return 0
    fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
    print(f"schedule {name}  L={args.layers}  T={fmt(T)}  W={fmt(W)}")
    width = len(str(max(steps)))
    for row in rows:
        print(f"step {row['step']:>{width}}: " + " ".join(f"{a:.4f}" for a in row["alpha"]))
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0
