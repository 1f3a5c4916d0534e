"""A rendered ValidatingAdmissionPolicy's CEL, evaluated offline with cel-python (`celpy`).

What the API server does for one request, in its order: the request must match a
resourceRule of matchConstraints (operation and resource); every matchCondition must be true,
else the policy does not apply; the variables are computed in order (each may use the
previous ones as `variables.<name>`); then every validation is evaluated, and each false one
denies with its messageExpression's value (its message if there is none).

Where this is NOT the API server, and why the tests still mean something:
- cel-python evaluates the expressions on plain JSON, untyped. Kubernetes type-checks them
  against the Pod's OpenAPI schema when the policy is created, so a misspelt field there is a
  compile error, here just an absent field. The forbidden-pod tests catch such a misspelling
  all the same: a check of a misspelt field would admit the pod it must deny.
- The pods here are what the client sends (or Airflow's PodGenerator builds), not what the
  API server has defaulted and mutated before validating admission runs (e.g. the
  ServiceAccount plugin sets serviceAccountName "default" where it is absent). The policy must
  deny both forms, and the tests give it both.
- Kubernetes' CEL extensions (string library: lastIndexOf, substring, split, join; optional
  fields `?.`/orValue; the authorizer) do not exist in cel-python. The policy uses none of them,
  and this evaluator fails loudly if an expression does not compile or evaluate, rather than
  guessing a result.
- An expression that errors in the API server denies the request (failurePolicy: Fail); here
  it raises PolicyError, so that a test sees the broken expression instead of a denial.
- Runtime cost limits are not modelled.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import celpy


class PolicyError(AssertionError):
    """An expression of the policy did not compile or did not evaluate to what it must."""


@dataclass(frozen=True)
class Decision:
    """`applies`: the request matched the rules and every matchCondition. `denials`: the
    message of every failed validation, in the policy's order (empty: admitted)."""

    applies: bool
    denials: list[str] = field(default_factory=list)

    @property
    def admitted(self) -> bool:
        return not self.denials


class Expression:
    def __init__(self, environment: celpy.Environment, where: str, source: str):
        self.where, self.source = where, source
        try:
            self.program = environment.program(environment.compile(source))
        except Exception as exc:  # celpy raises its parser's own error types
            raise PolicyError(f"{where}: does not compile in cel-python: {exc}\n  {source}") from exc

    def evaluate(self, activation: dict):
        try:
            result = self.program.evaluate(activation)
        except Exception as exc:
            raise PolicyError(f"{self.where}: evaluation failed: {exc}\n  {self.source}") from exc
        if isinstance(result, celpy.CELEvalError):
            raise PolicyError(f"{self.where}: evaluation failed: {result}\n  {self.source}")
        return result

    def evaluate_bool(self, activation: dict) -> bool:
        result = self.evaluate(activation)
        if not isinstance(result, (celpy.celtypes.BoolType, bool)):
            raise PolicyError(f"{self.where}: gave {result!r}, not a bool\n  {self.source}")
        return bool(result)

    def evaluate_string(self, activation: dict) -> str:
        result = self.evaluate(activation)
        if not isinstance(result, str):  # "+" may give a plain str
            raise PolicyError(f"{self.where}: gave {result!r}, not a string\n  {self.source}")
        return str(result)


class PolicyEvaluator:
    """The CEL of one rendered ValidatingAdmissionPolicy (a dict), compiled once."""

    def __init__(self, policy: dict):
        assert policy["kind"] == "ValidatingAdmissionPolicy", policy["kind"]
        spec = policy["spec"]
        environment = celpy.Environment()
        self.rules = spec["matchConstraints"]["resourceRules"]
        self.match_conditions = [
            Expression(environment, f"matchCondition {c['name']}", c["expression"])
            for c in spec.get("matchConditions", [])
        ]
        self.variables = [
            (v["name"], Expression(environment, f"variable {v['name']}", v["expression"]))
            for v in spec.get("variables", [])
        ]
        self.validations = []
        for index, validation in enumerate(spec["validations"]):
            where = f"validation {index}"
            message = None
            if "messageExpression" in validation:
                message = Expression(environment, f"{where} messageExpression", validation["messageExpression"])
            self.validations.append((Expression(environment, where, validation["expression"]), message, validation))

    def _matches_rules(self, operation: str, resource: str) -> bool:
        return any(
            "" in rule["apiGroups"] and "v1" in rule["apiVersions"]
            and operation in rule["operations"] and resource in rule["resources"]
            for rule in self.rules
        )

    def review(
        self,
        pod: dict,
        username: str,
        *,
        operation: str = "CREATE",
        resource: str = "pods",
        old_pod: dict | None = None,
        namespace: str = "airflow",
    ) -> Decision:
        """The policy's decision on `username` sending `operation` of `pod` (to `resource`:
        "pods" or a subresource such as "pods/ephemeralcontainers")."""
        if not self._matches_rules(operation, resource):
            return Decision(applies=False)
        resource_name, _, subresource = resource.partition("/")
        request = {
            "operation": operation,
            "namespace": namespace,
            "name": pod.get("metadata", {}).get("name", ""),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": resource_name},
            "subResource": subresource,
            "userInfo": {"username": username},
        }
        activation = {
            "object": celpy.json_to_cel(pod),
            "oldObject": celpy.json_to_cel(old_pod),
            "request": celpy.json_to_cel(request),
        }
        if not all(condition.evaluate_bool(activation) for condition in self.match_conditions):
            return Decision(applies=False)
        # One map, filled in order: each variable sees the ones before it.
        variables = activation["variables"] = celpy.celtypes.MapType()
        for name, expression in self.variables:
            variables[celpy.celtypes.StringType(name)] = expression.evaluate(activation)
        denials = []
        for expression, message_expression, validation in self.validations:
            if expression.evaluate_bool(activation):
                continue
            denials.append(
                message_expression.evaluate_string(activation) if message_expression else validation["message"]
            )
        return Decision(applies=True, denials=denials)
