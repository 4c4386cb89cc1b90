"""The rules of governance, written once: the audit replay checks them on every record, and the commands
call the same functions before they sign (`records.write` refuses a record that would be void).

A record is judged from signed data only, against what the valid records before it established: the
registry (people, keys, roles), the pinned policy, each ticket's signed creation and decisions, and each
dense model's deployment stack. Two outcomes besides "valid":
- an *integrity* problem (the row cannot be attributed: unregistered actor, a key that is not theirs, a
  signature that does not verify): the trail itself is not what its signers wrote, and no governance
  write proceeds until it is investigated;
- a *void* record: genuinely signed by a registered key, but malformed, signed without the role, with a
  revoked key, or breaking a rule (a rollback to a ticket never deployed, an approval hiding a failed
  rule, ...). It changes nothing, the audit names it, and governance goes on: one member cannot freeze
  it for everyone by signing a bad record.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field

from pruning.text import control_problem

from .. import like_for_like as lfl
from . import keys, people
from .chain import body_of
from .policy import Policy, parse_policy
from .record_types import APPROVE, BODIES, CHOICES

DENSE = "dense"
HEX64 = re.compile(r"^[0-9a-f]{64}$")

# kind -> required body fields and their types (bool is not an int here; None allowed where listed): the
# typed records declare them (`record_types`)
FIELDS: dict[str, dict[str, tuple]] = {kind: body.required() for kind, body in BODIES.items()}
TEXT = {"reason", "override_reason", "name"}  # free text a person typed: shown in terminals and pages
# an evidence row's fields in a decision signed now; decisions signed under like-for-like rule 1 stored no setup
ROW_FIELDS = ("task", "metric", "value", "stderr", "limit", "dtype", "direction", "ideal", "meta", "setup")
ROW_FIELDS_BY_RULE = {lfl.RULE_1: tuple(k for k in ROW_FIELDS if k != "setup"), lfl.RULE_2: ROW_FIELDS}


def _number_ok(v) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))


def _meta_ok(meta) -> bool:
    return meta is None or (isinstance(meta, dict) and set(meta) == {"direction", "ideal", "headline"}
                            and meta["direction"] in ("higher", "lower", "target") and _number_ok(meta["ideal"])
                            and isinstance(meta["headline"], bool))


def _count_ok(n) -> bool:
    """A row's document count: absent / None (decisions signed before rows carried it) or a count."""
    return n is None or (isinstance(n, int) and not isinstance(n, bool) and n >= 0)


def evidence_digest(evidence: dict) -> str:
    return hashlib.sha256(json.dumps(evidence, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def like_for_like_rule(body: dict) -> int:
    """The like-for-like rule a decision body was evaluated under (absent: rule 1, signed before it was named)."""
    return body.get("like_for_like") or lfl.RULE_1


def _row_problem(r: dict, rule: int) -> str:
    if rule == lfl.RULE_1:
        return ""
    if why := lfl.setup_problem(r["setup"]):
        return why
    if (r["setup"]["limit"], r["setup"]["dtype"]) != (r["limit"], r["dtype"]):
        return "its setup's limit or dtype is not the row's"
    return ""


def _evidence_problem(ev: dict, rule: int = lfl.RULE) -> str:
    if not isinstance(ev.get("content_sha256"), str) or not _number_ok(ev.get("sparsity")):
        return "its evidence lacks the ticket's content hash or a finite sparsity"
    rows = ev.get("rows")
    if not isinstance(rows, dict) or set(rows) != {"ticket", "baseline", "dense"}:
        return "its evidence lacks the ticket, baseline and dense metric rows"
    for who, group in rows.items():
        if not isinstance(group, list):
            return f"its {who} evidence is not a list of rows"
        for r in group:
            if not isinstance(r, dict) or set(r) - {"n_docs"} != set(ROW_FIELDS_BY_RULE[rule]) \
                    or not isinstance(r["task"], str) \
                    or not _count_ok(r.get("n_docs")) \
                    or not isinstance(r["metric"], str) or not all(_number_ok(r[k]) for k in ("value", "stderr", "ideal")) \
                    or not (r["limit"] is None or (isinstance(r["limit"], int) and not isinstance(r["limit"], bool))) \
                    or not _meta_ok(r["meta"]):
                return f"its {who} evidence holds a malformed metric row"
            if why := _row_problem(r, rule):
                return f"its {who} evidence holds a malformed metric row ({why})"
    return ""


def body_problem(kind: str, body) -> str:
    """Why a `kind` record's body is malformed ('' when it is well-formed)."""
    if kind not in FIELDS:
        return f"unknown kind {kind!r}"
    if not isinstance(body, dict):
        return "its body is not a JSON object"
    for name, types in FIELDS[kind].items():
        v = body.get(name)
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            return f"its body's {name!r} is missing or not {' or '.join(t.__name__ for t in types)}"
        if name in TEXT and isinstance(v, str) and (why := control_problem(v, name)):
            return f"its body's {why}"
    if kind in ("decision", "promote", "rollback", "revoke") and not body["reason"].strip():
        return "it gives no reason"
    if kind in ("register", "roles") and not all(r in people.ROLES for r in body["roles"]):
        return f"it names a role outside {', '.join(people.ROLES)}"
    if kind in ("register", "roles") and not keys.NAME_RE.match(body["name"]):
        return "it names an unusable person name"
    if kind == "init":
        p = body["person"]
        if not (isinstance(p.get("name"), str) and isinstance(p.get("public_key"), str)
                and isinstance(p.get("roles"), list) and "admin" in p["roles"]):
            return "it does not register a first admin"
    if kind == "decision":
        if body["decision"] not in CHOICES:
            return f"its decision {body['decision']!r} is neither approve nor reject"
        if not all(isinstance(r, str) for r in body["unmet_rules"]):
            return "its unmet rules are not names"
        if body["override"] and not (body["override_reason"] or "").strip():
            return "it overrides the policy without an override reason"
        if evidence_digest(body["evidence"]) != body["evidence_sha256"]:
            return "its evidence does not hash to the evidence digest it signs"
        rule = body.get("like_for_like")
        if "like_for_like" in body and (rule not in lfl.RULES or isinstance(rule, bool) or rule == lfl.RULE_1):
            # rule 1 is named by absence only: records signed before the field existed
            return f"its like-for-like rule {rule!r} is not one of {', '.join(map(str, lfl.RULES[1:]))}"
        return _evidence_problem(body["evidence"], like_for_like_rule(body))
    if kind == "policy" and hashlib.sha256(body["text"].encode()).hexdigest() != body["sha256"]:
        return "its policy text does not hash to the sha256 it names"
    if kind == "policy" and (why := control_problem(body.get("name") if isinstance(body.get("name"), str) else "",
                                                    "policy name")):
        return f"its {why}"
    return ""


@dataclass
class Trail:
    """What the valid records so far established, beyond the registry."""
    policies: list[dict] = field(default_factory=list)  # pinned policy bodies, oldest first
    creations: dict[str, dict] = field(default_factory=dict)  # ticket id -> its (first) creation row
    decisions: dict[str, list[dict]] = field(default_factory=dict)  # ticket id -> valid decision rows
    stacks: dict[str, list[str]] = field(default_factory=dict)  # dense sha256 -> deployed, oldest first
    deployed: dict[str, set[str]] = field(default_factory=dict)  # dense sha256 -> tickets ever promoted
    # the newest like-for-like rule a valid decision used, and that decision's seq: a ledger does not go back
    # to the older rule, so an insider cannot sign a new decision under it to pair unlike rows
    like_for_like: tuple[int, int | None] = (lfl.RULE_1, None)
    _parsed: dict[str, Policy] = field(default_factory=dict)

    def pinned(self) -> Policy | None:
        if not self.policies:
            return None
        b = self.policies[-1]
        if b["sha256"] not in self._parsed:
            self._parsed[b["sha256"]] = parse_policy(b["text"], f"ledger policy v{b['version']}", b["sha256"])
        return self._parsed[b["sha256"]]

    def pinned_version(self) -> int | None:
        return self.policies[-1]["version"] if self.policies else None

    def latest(self, ticket_id: str) -> dict | None:
        rows = self.decisions.get(ticket_id)
        return rows[-1] if rows else None

    def stack(self, dense: str) -> list[str]:
        return self.stacks.get(dense, [DENSE])

    def pointer(self, dense: str) -> str:
        return self.stack(dense)[-1]


# --- the rules: '' when the record may stand, else why not (the commands show it, the audit voids) ---
def registry_problem(reg: people.Registry, kind: str, body: dict) -> str:
    if kind == "register":
        existing = reg.people.get(body["name"])
        if existing is not None and existing.key_id is not None:
            return (f"{body['name']} is already registered with key {existing.key_id[:12]}; revoke it first "
                    f"(`ticketlab people revoke {body['name']}`) to register a new one")
        try:
            kid = keys.fingerprint(body["public_key"])
        except Exception as e:  # a damaged PEM in a signed record is a void record, not a crash
            return f"its public key is unusable ({e})"
        for other in reg.people.values():
            if kid in other.keys:
                return f"that public key is already registered to {other.name}: one key, one person"
    elif kind == "roles":
        person = reg.people.get(body["name"])
        if person is None:
            return f"{body['name']} is not registered"
        admins = [p for p in reg.people.values() if "admin" in p.roles and p.key_id]
        if "admin" in person.roles and "admin" not in body["roles"] and admins == [person]:
            return "it takes admin from the only admin: grant admin to someone else first"
    elif kind == "revoke":
        person = reg.people.get(body["name"])
        if person is None or person.key_id is None:
            return f"{body['name']} has no active key to revoke"
        if body["key_id"] != person.key_id:
            return f"it revokes key {body['key_id'][:12]}, which is not {body['name']}'s active key"
    return ""


def policy_problem(trail: Trail, body: dict) -> str:
    try:
        parse_policy(body["text"], "the policy record", body["sha256"])
    except Exception as e:  # TicketLabError with the line, or anything a hand-made record provokes
        return f"its policy does not parse ({e})"
    if trail.policies and trail.policies[-1]["sha256"] == body["sha256"]:
        v = trail.policies[-1]
        return f"that policy is already pinned (version {v['version']}, {v['sha256'][:12]})"
    want = (trail.pinned_version() or 0) + 1
    if body["version"] != want:
        return f"it pins policy version {body['version']}, but the next version is {want}"
    return ""


def create_problem(trail: Trail, body: dict) -> str:
    tid = body["ticket_id"]
    if not HEX64.match(body["content_sha256"]) or body["content_sha256"][:16] != tid:
        return f"ticket id {tid} is not the start of the content hash {body['content_sha256'][:16]} it signs"
    first = trail.creations.get(tid)
    if first is not None:
        return f"{tid} already has a signed creator ({first['actor']}, record #{first['seq']})"
    return ""


def decision_problem(trail: Trail, actor: str, body: dict, evaluated=None) -> str:
    """`evaluated`: the review the writer made this body from (`decisions.evaluated_decision`); used instead of
    evaluating the policy again when it is the review of this very evidence, policy, creator and reviewer."""
    from .review import FAIL, evaluate  # review reads state, which replays with these rules

    tid, pol = body["ticket_id"], trail.pinned()
    if pol is None:
        return "no policy was pinned"
    if body["policy_sha256"] != pol.sha256:
        return (f"it was made under policy {body['policy_sha256'][:12]}, not the policy pinned at the time "
                f"({pol.name} {pol.sha256[:12]})")
    creation = trail.creations.get(tid)
    if creation is not None:
        c = body_of(creation)
        if (body["dense_sha256"], body["content_sha256"]) != (c["dense_sha256"], c["content_sha256"]):
            return f"it names another dense model or content hash than {tid}'s signed creation (record #{creation['seq']})"
    if body["evidence"]["content_sha256"] != body["content_sha256"]:
        return "its evidence is about other ticket content than the ticket it decides on"
    creator = creation["actor"] if creation else None
    rule = like_for_like_rule(body)
    newest, since = trail.like_for_like
    if rule < newest:
        return (f"it is evaluated under like-for-like rule {rule}, but decisions on this ledger use rule {newest} "
                f"since record #{since}")
    same = evaluated is not None and evaluated.evidence is body["evidence"] and evaluated.policy["sha256"] == pol.sha256 \
        and (evaluated.ticket, evaluated.dense_sha256, evaluated.creator, evaluated.reviewer, evaluated.like_for_like) \
        == (tid, body["dense_sha256"], creator, actor, rule)
    review = evaluated if same else evaluate(pol, body["evidence"], tid, body["dense_sha256"], creator, actor, rule)
    unmet = list(dict.fromkeys(r.rule for r in review.failures))
    if sorted(unmet) != sorted(body["unmet_rules"]) or review.passed != body["passed"]:
        return (f"its signed evidence fails {', '.join(unmet) or 'no rule'} under the pinned policy {pol.name}, but it "
                f"records {', '.join(body['unmet_rules']) or 'none'} as unmet (passed={body['passed']})")
    if body["decision"] != APPROVE:
        return ""
    if creation is None or body["creation_hash"] != creation["row_hash"]:
        return (f"{tid} cannot be approved: nobody has signed as its creator (it was recorded by `ticketlab eval`, "
                f"an experiment or a dashboard Load). Its creator signs for it with `ticketlab sign-ticket {tid}` "
                f"first; this cannot be overridden")
    if creation["actor"] == actor and not pol.creator_may_approve:
        return (f"{actor} may not approve {tid}: {actor} signed its creation (record #{creation['seq']}) and the "
                f"pinned policy {pol.name} separates duties; this cannot be overridden")
    hard = [r for r in review.results if r.status == FAIL and not r.overridable]
    if hard:
        return f"{actor} may not approve {tid}: {hard[0].detail} ({hard[0].limit}); this cannot be overridden"
    failing = review.failures
    if failing and not body["override"]:
        listed = ", ".join(f"{r.rule} {r.item}: {r.status}{' (indicative)' if r.indicative else ''}"
                           for r in failing[:6])
        more = f" and {len(failing) - 6} more" if len(failing) > 6 else ""
        return (f"{tid} does not pass the pinned policy {pol.name} ({listed}{more}); approving it needs --override "
                f"--override-reason TEXT, which is recorded. See `ticketlab review`")
    if body["override"] and not failing:
        return f"{tid} passes the pinned policy {pol.name}: there is nothing to override; drop --override"
    return ""


def promote_problem(trail: Trail, body: dict) -> str:
    tid, dense = body["target"], body["dense_sha256"]
    creation = trail.creations.get(tid)
    approval = trail.latest(tid)
    if approval is None or body_of(approval)["decision"] != APPROVE:
        why = (f"its latest decision is {body_of(approval)['decision']} (#{approval['seq']})" if approval
               else "it has no decision")
        return (f"only approved tickets can be promoted: {tid} is not approved ({why}). See `ticketlab review` and "
                f"`ticketlab decide`")
    c = body_of(creation)  # an approval rests on a creation (decision_problem)
    if c["dense_sha256"] != dense or c["content_sha256"] != body["content_sha256"]:
        return (f"{tid} was pruned from dense model {c['dense_sha256'][:12]} (content {c['content_sha256'][:12]}): "
                f"a promotion moves only that model's pointer, not {dense[:12]}'s")
    if body["decision_hash"] != approval["row_hash"]:
        return f"it rests on decision {body['decision_hash'][:12]}, not {tid}'s latest decision #{approval['seq']}"
    a, pol = body_of(approval), trail.pinned()
    if a["policy_sha256"] != pol.sha256:
        return (f"{tid} was approved under policy {a['policy_sha256'][:12]} (v{a.get('policy_version')}), but the "
                f"pinned policy is now {pol.name} {pol.sha256[:12]} (v{trail.pinned_version()}): a reviewer must "
                f"decide again under it before it can be promoted")
    if body["policy_sha256"] != pol.sha256:
        return f"it names policy {body['policy_sha256'][:12]}, not the pinned {pol.sha256[:12]}"
    now = trail.pointer(dense)
    if now == tid:
        return f"{tid} is already deployed for dense model {dense[:12]}"
    if body["previous"] != now:
        return f"it says it replaces {body['previous']}, but {now} is deployed for dense model {dense[:12]}"
    new = [r for r in body["unmet_rules"] if r not in a["unmet_rules"]]
    if new:
        return (f"{tid} now fails {', '.join(new)} under the pinned policy {pol.name}, which its approval "
                f"(decision #{approval['seq']}) did not override: a reviewer must decide again")
    return ""


def rollback_problem(trail: Trail, body: dict) -> str:
    to, dense = body["target"], body["dense_sha256"]
    now = trail.pointer(dense)
    if to == now:
        return f"{to} is already deployed for dense model {dense[:12]}"
    if body["previous"] != now:
        return f"it says it replaces {body['previous']}, but {now} is deployed for dense model {dense[:12]}"
    if to == DENSE:
        return ""
    if to not in trail.deployed.get(dense, set()):
        return (f"{to} was never deployed for dense model {dense[:12]}: rollback returns to an earlier deployment; "
                f"use `ticketlab promote` for a new one")
    last = trail.latest(to)
    if last is None or body_of(last)["decision"] != APPROVE:
        who = f" (decision #{last['seq']} by {last['actor']})" if last else ""
        return f"{to} was rejected after it was deployed{who}; roll back to another one, e.g. --to dense"
    return ""


def rule_problem(reg: people.Registry, trail: Trail, kind: str, actor: str, body: dict, evaluated=None) -> str:
    """The one entry point: why a well-formed `kind` record by `actor` may not stand now ('' when it may)."""
    if kind in ("register", "roles", "revoke"):
        return registry_problem(reg, kind, body)
    if kind == "policy":
        return policy_problem(trail, body)
    if kind == "create":
        return create_problem(trail, body)
    if kind == "decision":
        return decision_problem(trail, actor, body, evaluated)
    if kind == "promote":
        return promote_problem(trail, body)
    if kind == "rollback":
        return rollback_problem(trail, body)
    return ""


def _apply_trail(trail: Trail, row: dict, body: dict) -> None:
    kind = row["kind"]
    if kind == "policy":
        trail.policies.append(body)
    elif kind == "create":
        trail.creations.setdefault(body["ticket_id"], row)
    elif kind == "decision":
        trail.decisions.setdefault(row["subject"], []).append(row)
        if (rule := like_for_like_rule(body)) > trail.like_for_like[0]:
            trail.like_for_like = (rule, row["seq"])
    elif kind in ("promote", "rollback"):
        s = trail.stacks.setdefault(body["dense_sha256"], [DENSE])
        if kind == "rollback" and body["target"] in s:
            del s[s.index(body["target"]) + 1:]
        else:
            s.append(body["target"])
        if kind == "promote":
            trail.deployed.setdefault(body["dense_sha256"], set()).add(body["target"])


@dataclass
class Replayed:
    registry: people.Registry
    trail: Trail
    problems: dict[int, str]  # seq -> integrity problem: the row is not what a registered key signed
    voided: dict[int, str]  # seq -> why a genuinely signed record counts for nothing


def replay(rows: list[dict], upto: int | None = None) -> Replayed:
    """Judge every record (up to seq `upto`, where the hash chain breaks) against what the valid records
    before it established; only valid records change the registry and the trail."""
    reg, trail, problems, voided = people.Registry(), Trail(), {}, {}
    for row in rows:
        seq, kind = row["seq"], row["kind"]
        if upto is not None and seq >= upto:
            break
        why, attributable = people.signature_problem(reg, row)
        if why:
            (voided if attributable else problems)[seq] = why
            continue
        try:
            body = body_of(row)
        except (TypeError, ValueError) as e:
            voided[seq] = f"record #{seq} ({kind} by {row['actor']}) is void: its body is not JSON ({e})"
            continue
        why = record_problem(reg, trail, kind, row["actor"], row["subject"], body)
        if why:
            voided[seq] = f"record #{seq} ({kind} by {row['actor']}) is void: {why}"
            continue
        people.apply(reg, kind, body)
        _apply_trail(trail, row, body)
    return Replayed(reg, trail, problems, voided)


def record_problem(reg: people.Registry, trail: Trail, kind: str, actor: str, subject: str | None, body: dict,
                   evaluated=None) -> str:
    """Why a record whose signature holds may not stand: malformed, its actor lacks the role, or it breaks
    a rule. `records.write` asks this before signing; the replay voids a record for which it is not ''."""
    why = body_problem(kind, body)
    if not why and kind != "init" and subject != _subject(kind, body):
        why = f"its subject {subject!r} is not what its body names ({_subject(kind, body)!r})"
    return why or people.role_problem(reg, kind, actor, body) or rule_problem(reg, trail, kind, actor, body, evaluated)


def _subject(kind: str, body: dict) -> str | None:
    """The subject column a record of `kind` carries (it is signed too; it must agree with the body)."""
    if kind in ("register", "roles", "revoke"):
        return body["name"]
    if kind == "policy":
        return f"policy v{body['version']}"
    if kind in ("create", "decision"):
        return body["ticket_id"]
    return body["dense_sha256"]
