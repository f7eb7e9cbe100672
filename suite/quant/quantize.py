"""``quantize_``: put any ``nn.Module``'s weight layers on bitsweep's grids, in place.

    >>> model = nn.Sequential(nn.Embedding(100, 16), nn.Linear(16, 16), nn.LayerNorm(16),
    ...                       nn.Linear(16, 100))
    >>> summary = quantize_(model, "1.58", keep_fp32="last")
    >>> print(summary)   # the per-layer table, then what stayed at fp32 and why

Each weight layer is converted where it sits: ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and
``nn.Embedding`` (exactly those types: a subclass may compute differently, so it needs its own
registration) become ``QuantLinear``, ``QuantConv1d``, ``QuantConv2d`` and ``QuantEmbedding`` by
changing their class, so the module keeps its identity, parameters (values, device, dtype),
buffers and hooks, and every reference to it (an optimiser's, a tied weight's) stays valid.
A layer already quantised by bitsweep is reconfigured. Other types are converted by what
``register_layer`` registered for them; Hugging Face's ``transformers.pytorch_utils.Conv1D``
(GPT-2's attention and MLP projections: weight (in, out), ``y = x @ W + b``) has a built-in
converter in ``suite.quant.hf``, imported only when a model holds such a layer, which quantises
the (in, out) weight with its per-channel step on the out axis. A user's layer is one call away::

    def convert(layer: MyLinear, qconfig: QuantConfig) -> nn.Module:
        layer.__class__ = QuantMyLinear   # a (QuantMixin, MyLinear) subclass whose forward
        layer._init_quant(qconfig)        # uses self.quantized_weight()
        return layer
    register_layer(MyLinear, convert)

Nothing is left at full precision silently: the summary lists every parameter that is stored at
32 bits and why (its layer is kept at fp32, it is a bias, it belongs to a layer type nothing
converts, ...), and its memory accounting counts those at 32 bits.

Tied weights (GPT-2's ``wte`` and ``lm_head``) stay tied: every layer using one tensor gets the
resolution of the first of them in module order (a rule asking otherwise is overridden and the
summary says so), and a learned step is shared by them, so both see the same grid values and the
packed file stores the tensor once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from torch import nn

from suite.quant.layers import QuantConfig, QuantConv1d, QuantConv2d, QuantEmbedding, QuantLinear, QuantMixin
from suite.quant.policy import LayerRule, check_keep_fp32, parse_rules, resolve
from suite.quant.resolution import Resolution, parse_resolution
from suite.quant.summary import LayerRow, Named, format_table, layer_table, own_parameters

Converter = Callable[[nn.Module, QuantConfig], nn.Module]


def swap_class(quant_type: type[nn.Module]) -> Converter:
    """A converter that turns a layer into ``quant_type`` (a QuantMixin subclass of the layer's
    own class, whose forward uses ``quantized_weight()``/``quantized_bias()``) in place."""

    def convert(module: nn.Module, qconfig: QuantConfig) -> nn.Module:
        module.__class__ = quant_type
        if "bias" not in module._parameters:  # nn.Embedding has none; the layers read self.bias
            module.register_parameter("bias", None)
        module._init_quant(qconfig)
        return module

    return convert


_CONVERTERS: dict[type, Converter] = {
    nn.Linear: swap_class(QuantLinear),
    nn.Conv1d: swap_class(QuantConv1d),
    nn.Conv2d: swap_class(QuantConv2d),
    nn.Embedding: swap_class(QuantEmbedding),
}
# Built-in converters of other libraries' layers, by "module.qualname", imported on first sight
# so that quantize_ never imports the library itself.
_LAZY: dict[str, str] = {"transformers.pytorch_utils.Conv1D": "suite.quant.hf:convert_conv1d"}


def register_layer(layer_type: type, converter: Converter) -> None:
    """Let ``quantize_`` convert layers of exactly ``layer_type`` with ``converter(layer,
    qconfig)``, which returns the quantised layer (a ``QuantMixin`` holding the layer's own
    parameters): the same object with its class changed, or a new one put in its place."""
    if not isinstance(layer_type, type) or not issubclass(layer_type, nn.Module):
        raise TypeError(f"register_layer needs an nn.Module subclass, got {layer_type!r}")
    if not callable(converter):
        raise TypeError(f"the converter for {layer_type.__name__} must be callable")
    _CONVERTERS[layer_type] = converter
    _NONE.discard(layer_type)


_NONE: set[type] = set()  # types known to have no converter (a model repeats its types)


def converter_for(layer_type: type) -> Converter | None:
    """What converts layers of exactly ``layer_type`` (None: nothing does)."""
    found = _CONVERTERS.get(layer_type)
    if found is None and layer_type not in _NONE:
        target = _LAZY.get(f"{layer_type.__module__}.{layer_type.__qualname__}")
        if target is None:
            _NONE.add(layer_type)
            return None
        import importlib

        module_name, attr = target.split(":")
        found = getattr(importlib.import_module(module_name), attr)
        _CONVERTERS[layer_type] = found
    return found


def _is_weight_layer(module: nn.Module) -> bool:
    return isinstance(module, QuantMixin) or converter_for(type(module)) is not None


@dataclass(frozen=True)
class FullPrecision:
    """A parameter stored at 32 bits, and why."""

    name: str      # its state_dict key
    numel: int
    reason: str


@dataclass(frozen=True)
class QuantizeSummary:
    """What ``quantize_`` did. ``print(summary)`` shows the per-layer table (name, type,
    parameters, resolution, bits, bytes), then every parameter left at full precision."""

    layers: tuple[LayerRow, ...]
    full_precision: tuple[FullPrecision, ...]
    resolutions: dict[str, str]        # weight layer -> resolution label it got
    reasons: dict[str, str]            # weight layer -> why (default, rule ..., keep_fp32=...)
    params: int                        # every parameter once (tied ones too), grid steps aside
    params_quantized: int              # those stored below 32 bits
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def share_quantized(self) -> float:
        """Share of the parameters stored below 32 bits."""
        return self.params_quantized / self.params if self.params else 0.0

    @property
    def bytes(self) -> float:
        """Stored bytes: quantised parameters at log2 N bits, all others (and steps) at 32."""
        return sum(r.bytes for r in self.layers)

    @property
    def fp32_bytes(self) -> float:
        return 4.0 * self.params

    def table(self) -> str:
        return format_table(list(self.layers))

    def __str__(self) -> str:
        lines = [self.table(), "",
                 f"{self.params_quantized:,} of {self.params:,} parameters quantised "
                 f"({100 * self.share_quantized:.1f}%); {self.bytes:,.0f} bytes stored vs "
                 f"{self.fp32_bytes:,.0f} at fp32"]
        if self.full_precision:
            lines.append("left at full precision (counted at 32 bits):")
            lines += [f"  {p.name} ({p.numel:,}): {p.reason}" for p in self.full_precision]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _plan(named: Named, default: Resolution, rules: Sequence[LayerRule], keep_fp32: str
          ) -> tuple[dict[str, nn.Module], dict[str, tuple[Resolution, str]], list[str]]:
    """The weight layers by name, each one's resolution and reason, and notes on ties."""
    layers: dict[str, nn.Module] = {}
    seen: set[int] = set()
    for name, module in named:  # named_modules yields a module registered twice once
        if id(module) not in seen and _is_weight_layer(module):
            seen.add(id(module))
            layers[name] = module
    plan = resolve(list(layers), default, rules, keep_fp32)
    # a rule naming no weight layer is a typo or meant for another model: said, not an error
    notes = [f"rule {r} matches no weight layer" for r in rules
             if not any(r.matches(name) for name in layers)]
    first_user: dict[int, str] = {}
    for name, module in layers.items():
        weight = module._parameters.get("weight")  # a registered type may keep it elsewhere
        if weight is None:
            continue
        wid = id(weight)
        if wid not in first_user:
            first_user[wid] = name
            continue
        lead = first_user[wid]
        if plan[name][0] != plan[lead][0]:
            notes.append(f"{name}.weight is tied to {lead}.weight, so it stays at "
                         f"{plan[lead][0].label} ({plan[lead][1]}) instead of "
                         f"{plan[name][0].label} ({plan[name][1]})")
        plan[name] = (plan[lead][0], f"tied to {lead}.weight")
    return layers, plan, notes


def _share_steps(named: Named) -> None:
    """Users of one tied weight share the first one's learned step, so they quantise alike."""
    steps: dict[int, QuantMixin] = {}
    for _, module in named:
        if isinstance(module, QuantMixin) and module.step is not None:
            lead = steps.setdefault(id(module.weight), module)
            if lead is not module and lead.step.shape == module.step.shape:
                module._parameters["step"] = lead.step


def _full_precision(named: Named, plan: dict[str, tuple[Resolution, str]]
                    ) -> tuple[FullPrecision, ...]:
    out: list[FullPrecision] = []
    quantized: dict[int, str] = {}
    for mod_name, module in named:
        if isinstance(module, QuantMixin) and module.qconfig.resolution.quantized:
            quantized.setdefault(id(module.weight), f"{mod_name}.weight")
            if module.bias is not None and module.qconfig.bias_quantized:
                quantized.setdefault(id(module.bias), f"{mod_name}.bias")
    seen: set[int] = set()
    for mod_name, module in named:
        prefix = f"{mod_name}." if mod_name else ""
        for pname, p in own_parameters(module):
            key = prefix + pname
            if id(p) in quantized:
                if quantized[id(p)] != key and not isinstance(module, QuantMixin):
                    # the same tensor, read here without the grid: a use the grid cannot reach
                    out.append(FullPrecision(key, p.numel(), f"tied to {quantized[id(p)]}, but "
                                             f"{type(module).__name__} reads it unquantised"))
                continue
            if id(p) in seen or pname == "step" and isinstance(module, QuantMixin):
                continue
            seen.add(id(p))
            out.append(FullPrecision(key, p.numel(), _why_fp32(module, mod_name, pname, plan)))
    return tuple(out)


def _why_fp32(module: nn.Module, mod_name: str, pname: str,
              plan: dict[str, tuple[Resolution, str]]) -> str:
    if isinstance(module, QuantMixin):
        if not module.qconfig.resolution.quantized:
            return f"layer at fp32 ({plan.get(mod_name, (None, 'already fp32'))[1]})"
        if pname == "bias":
            return "bias (quantize_bias=False)"
    kind = type(module).__name__
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)):
        return f"{kind} parameter (norms stay fp32)"
    return f"{kind} has no converter (register_layer({kind}, ...) to quantise it)"


def quantize_(model: nn.Module, resolution: Any, *, scale_rule: str = "gauss",
              per_channel: bool = False, quantize_bias: bool | None = False,
              layers: Any = None, keep_fp32: str = "none",
              conv_norm: str = "chw") -> QuantizeSummary:
    """Quantise ``model``'s weight layers in place and say what was done.

    ``resolution``: what every weight layer gets unless a rule says otherwise (any spelling
    ``parse_resolution`` accepts: ``"1"``, ``"1.58"``, ``"N=7"``, ``"bnn"``, ``"fp32"``).
    ``scale_rule``: a registered scale rule (``scale.scale_rules()``). ``per_channel``: one step
    per output channel. ``quantize_bias``: put biases on the grid too (None: only at bnn).
    ``layers``: ordered (module-name pattern -> resolution) rules, first match wins, as
    ``["head=fp32", "re:blocks\\.0\\..*=4"]`` or ``[{"head": "fp32"}]`` (``suite.quant.policy``).
    ``keep_fp32``: ``none | first | last | ends``, the first and/or last weight layer in module
    order kept at fp32 (``suite.quant.policy``). A layer at fp32 stays a bitsweep layer with
    quantisation off (the same code path as the fp32 baselines).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_ needs an nn.Module, got {type(model).__name__}")
    default = parse_resolution(resolution)
    base = QuantConfig(resolution=default, scale_rule=scale_rule, per_channel=per_channel,
                       quantize_bias=quantize_bias, conv_norm=conv_norm)
    rules = parse_rules(layers)
    check_keep_fp32(keep_fp32)
    named = list(model.named_modules())
    found, plan, notes = _plan(named, default, rules, keep_fp32)
    configs: dict[Resolution, QuantConfig] = {}
    replaced: dict[int, nn.Module] = {}
    for name, module in found.items():
        res = plan[name][0]
        qconfig = configs.setdefault(res, base if res == default else replace(base, resolution=res))
        if isinstance(module, QuantMixin):
            if module.qconfig != qconfig:
                module.set_qconfig(qconfig)
            continue
        new = converter_for(type(module))(module, qconfig)
        if not isinstance(new, QuantMixin):
            raise TypeError(f"the converter for {type(module).__name__} returned "
                            f"{type(new).__name__}, not a quantised layer (QuantMixin)")
        if new is not module:
            if module is model:  # nothing holds the root but the caller
                raise TypeError(f"the converter for {type(module).__name__} returned a new "
                                "module for the model itself; quantize_ changes a model in "
                                "place: wrap the layer in an nn.Sequential")
            replaced[id(module)] = new
    if replaced:
        _put_back(model, replaced)
        named = list(model.named_modules())
    _share_steps(named)
    rows = tuple(layer_table(model, named))
    return QuantizeSummary(
        layers=rows,
        full_precision=_full_precision(named, plan),
        resolutions={n: r.label for n, (r, _) in plan.items()},
        reasons={n: why for n, (_, why) in plan.items()},
        params=sum(r.params for r in rows),
        params_quantized=sum(r.params_quantized for r in rows),
        notes=tuple(notes),
    )


def _put_back(model: nn.Module, replaced: dict[int, nn.Module]) -> None:
    """Put each converter's new module wherever its old one was registered."""
    for module in list(model.modules()):
        for child_name, child in list(module._modules.items()):
            if child is not None and id(child) in replaced:
                module._modules[child_name] = replaced[id(child)]
