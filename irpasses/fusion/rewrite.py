"""RuleSetPass: applies a set of onnxscript rewrite rules and explains what matched and what nearly did.

Each pass lists its rules; the pass counts rewrites per rule and, when ``ctx.extra["explain"]`` is a list,
appends one entry per site that matched and per near-miss (the pattern matched but a check failed), with the
check's reason, e.g. "HardSigmoidFusion at Div node 'x': Swish requires divisor value of 6".
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import onnx_ir as ir
from onnxpress.irpasses.core.context import PassContext
from onnxpress.irpasses.core.opsets import domain_version, nodes_problem
from onnxpress.irpasses.core.pass_base import Pass, PassResult
from onnxpress.irpasses.core.properties import CONSTANTS_LIFTED
from onnxscript.rewriter import (
    RULE_NAME_TAG,
    MatchingTracer,
    MatchResult,
    MatchStatus,
    RewriteRule,
    RewriteRuleSet,
)
from onnxscript.rewriter._rewrite_rule import ReplacementPatternFunction


def rule_name(rule: RewriteRule) -> str:
    return getattr(rule, "name", None) or type(rule).__name__


class ExplainTracer(MatchingTracer):
    """Records every successful match and every near-miss instead of only the best one per rule."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[RewriteRule, ir.Node, MatchStatus, str]] = []

    def log(self, rule: RewriteRule, container: Any, node: ir.Node, match_result: Any, status: MatchStatus) -> None:
        if status == MatchStatus.SUCCESS:
            self.events.append((rule, node, status, ""))
        elif status in (MatchStatus.CONDITION_FAILED, MatchStatus.REPLACEMENT_FAILED) and len(match_result.nodes) >= 2:
            # A near-miss: a multi-node pattern matched and a check refused it. Single-node patterns whose
            # check fails (e.g. "Conv bias is not all zeros") only say the rule does not apply.
            self.events.append((rule, node, status, str(match_result.reason or "")))


def required_ops(rule: RewriteRule) -> frozenset[str] | None:
    """Op types every match of ``rule`` contains (None if unknown): the root and the nodes reachable from it
    through plain node outputs; alternatives (OrValue) are not followed, a match need not use them. Reads
    onnxscript 0.7 internals, pinned; anything unexpected falls back to no filtering."""
    try:
        ops: set[str] = set()
        stack = [rule._target_pattern.output_node]
        while stack:
            node = stack.pop()
            if not hasattr(node.op, "value"):
                continue  # an op pattern that is not one constant name (a prefix): no requirement
            ops.add(str(node.op.value()))
            for value in node.inputs:
                if type(value).__name__ == "NodeOutputPattern":
                    stack.append(value.producer())
        return frozenset(ops) or None
    except (AttributeError, ValueError, TypeError):
        return None


def applicable(rules: list[RewriteRule], model: ir.Model) -> list[RewriteRule]:
    """Drop rules whose pattern needs an op type the model does not have: onnxscript tries every rule at
    every node, which dominated fusion time (90k match attempts for a 330-node model)."""
    present = {n.op_type for n in ir.traversal.RecursiveGraphIterator(model.graph)}
    kept = []
    for rule in rules:
        ops = required_ops(rule)
        if ops is None or ops <= present:
            kept.append(rule)
    return kept


def opset(model: ir.Model, domain: str = "") -> int:
    """The version ``model`` imports for ``domain`` (0 when none)."""
    return domain_version(model.opset_imports, domain) or 0


class _OpsetGuard(ReplacementPatternFunction):
    """A rule's replacement that declines (a failed match naming why) when it would insert a node the model's
    opset does not have: onnxscript's rules write the newest form of each op (Gemm without C, Reshape with a
    shape input, Unsqueeze with an axes input) whatever the model's opset."""

    def __init__(self, inner: ReplacementPatternFunction, opsets: Mapping[str, int]) -> None:
        super().__init__(inner._function)  # a subclass, so that RewriteRule.commute() keeps it as it is
        self.inner = inner
        self.opsets = opsets

    def get_replacement(self, match: Any) -> Any:
        replacement = self.inner.get_replacement(match)
        if replacement is None:
            return None
        problem = nodes_problem(list(replacement.new_nodes), self.opsets)
        if problem is not None:
            match.fail(f"the replacement is not valid at the model's opset: {problem}")
            return None
        return replacement


def _declining(check: Callable[..., Any]) -> Callable[..., Any]:
    """onnxscript's checks read declared shapes without checking them (Flatten2Reshape indexes a declared output
    shape by the rank Flatten always has): an error there means the rule does not apply to this input."""

    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except (IndexError, ValueError, TypeError, KeyError, AttributeError) as err:
            return MatchResult().fail(f"the rule's check failed on this input: {type(err).__name__}: {err}")

    return call


def guarded(rules: list[RewriteRule], model: ir.Model) -> list[RewriteRule]:
    """Copies of ``rules`` that only insert nodes valid at ``model``'s opsets and, for onnxscript's own rules,
    treat an error in their check as no match. Reads onnxscript 0.7 internals (pinned), like ``required_ops``."""
    opsets = dict(model.opset_imports)
    out = []
    for rule in rules:
        replacement = getattr(rule, "_replacement_pattern", None)
        if not isinstance(replacement, ReplacementPatternFunction):
            out.append(rule)
            continue
        rule = copy.copy(rule)
        rule._replacement_pattern = _OpsetGuard(replacement, opsets)
        condition = getattr(rule, "_condition_function", None)
        if condition is not None and str(getattr(condition, "__module__", "")).startswith("onnxscript."):
            rule._condition_function = _declining(condition)
        out.append(rule)
    return out


class RuleSetPass(Pass):
    """Subclasses are dataclasses implementing ``rules(model, ctx)``."""

    keeps = frozenset({CONSTANTS_LIFTED})
    required = False
    commute: bool = False

    def rules(self, model: ir.Model, ctx: PassContext) -> list[RewriteRule]:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, model: ir.Model, ctx: PassContext) -> PassResult:
        rules = guarded(applicable(self.rules(model, ctx), model), model)
        if not rules:
            return self.result(model, False)
        explain = ctx.extra.get("explain")
        if isinstance(explain, list):
            # onnxscript applies nothing while a tracer is attached: trace first, then rewrite.
            tracer = ExplainTracer()
            RewriteRuleSet(rules, commute=self.commute).apply_to_model(model, tracer=tracer)
            self._explain(tracer, explain)
        before = {id(n) for n in model.graph}
        count = RewriteRuleSet(rules, commute=self.commute).apply_to_model(model)
        per_rule: Counter[str] = Counter()
        if count:
            model.graph.sort()  # replacements are inserted where the match root was
            _drop_unused_initializers(model.graph)  # weights a fusion replaced, so the fixpoint settles sooner
            for node in model.graph:  # onnxscript tags the nodes a rule created with the rule's name
                if id(node) not in before:
                    per_rule[str(node.metadata_props.get(RULE_NAME_TAG, "rewrite"))] += 1
        return self.result(model, bool(count), rewrites=count, **{f"new-nodes:{k}": v for k, v in per_rule.items()})

    def _explain(self, tracer: ExplainTracer, explain: list[dict[str, str]]) -> None:
        for rule, node, status, reason in tracer.events:
            explain.append(
                {
                    "pass": self.name,
                    "rule": rule_name(rule),
                    "node": f"{node.op_type} node '{node.name or '<unnamed>'}'",
                    "status": "matched" if status == MatchStatus.SUCCESS else "near-miss",
                    "reason": reason,
                }
            )


def _drop_unused_initializers(graph: ir.Graph) -> None:
    outputs = set(map(id, graph.outputs))
    for name, value in list(graph.initializers.items()):
        if not value.uses() and id(value) not in outputs and not value.is_graph_input():
            del graph.initializers[name]


def rules_of(*sets: Any) -> list[RewriteRule]:
    """Flatten RewriteRule / RewriteRuleSet / lists into a list of rules."""
    out: list[RewriteRule] = []
    for item in sets:
        if isinstance(item, RewriteRuleSet):
            out.extend(item.rules)
        elif isinstance(item, (list, tuple)):
            out.extend(rules_of(*item))
        else:
            out.append(item)
    return out
