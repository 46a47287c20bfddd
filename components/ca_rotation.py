"""CA rotation in three `up`s (`caRotation: trust`, then `sign`, then `done`), the plan of
docs/design.md made code: which CAs exist, which one signs, which ones every host trusts.

Each CA has a generation: 1 is `ca`, `etcd-ca`, `front-proxy-ca`; generation n > 1 adds `-n`
to those names. The rotation from generation g:

    phase   CAs created   signs   trusted     what the `up` does
    none    g             g       g           (no rotation)
    trust   g, g+1        g       g, g+1      every trust file a bundle of both; services restart
    sign    g, g+1        g+1     g, g+1      every leaf re-signed, kubelets bootstrap again
    done    g+1           g+1     g+1         the old CAs leave the bundles and are deleted

The stack exports where it stands (`pki`), once every host and add-on has it (as `versions`),
and the next run reads it back (components/upgrade.py): a phase only follows the one before it,
so nothing is ever signed by a CA that some host does not trust yet.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional

from .config import ConfigError

PHASES = ("trust", "sign", "done")


@dataclass(frozen=True)
class CaState:
    generation: int = 1  # the CAs the cluster ran on before this rotation
    phase: str = "none"  # none | trust | sign

    @property
    def signer(self) -> int:
        return self.generation + 1 if self.phase == "sign" else self.generation

    @property
    def trusted(self) -> tuple[int, ...]:
        return (self.generation, self.generation + 1) if self.phase in ("trust", "sign") else (self.generation,)

    def export(self) -> dict[str, Any]:
        return {"caGeneration": self.generation, "caRotation": self.phase}


def ca_name(base: str, generation: int) -> str:
    return base if generation == 1 else f"{base}-{generation}"


def deployed_state(outputs: Optional[Mapping[str, Any]]) -> CaState:
    """Where the last successful `up` left the rotation (its `pki` output; none: generation 1)."""
    pki = (outputs or {}).get("pki")
    if not isinstance(pki, Mapping):
        return CaState()
    return CaState(generation=int(pki.get("caGeneration", 1)), phase=str(pki.get("caRotation", "none")))


def target(deployed: CaState, want: Optional[str]) -> CaState:
    """The state this `up` goes to, given the config's `caRotation`; ConfigError when it skips a phase."""
    g, phase = deployed.generation, deployed.phase
    names = {"trust": "trust (the new CAs are trusted everywhere, nothing signed by them yet)",
             "sign": "sign (every certificate signed by the new CAs, the old ones still trusted)"}
    if want in (None, "done"):
        if phase == "none":
            return deployed
        if phase == "sign" and want == "done":
            return CaState(generation=g + 1)
        nxt = "sign" if phase == "trust" else "done"
        raise ConfigError([f"caRotation: a CA rotation stands at {names[phase]}; set caRotation to {nxt} "
                           f"for its next step" + (" (done comes after sign)" if want == "done" else "")])
    if want == "trust":
        if phase in ("none", "trust"):
            return CaState(generation=g, phase="trust")
        raise ConfigError(["caRotation: trust comes before sign, which this stack has done already; set "
                           "caRotation to done to finish the rotation"])
    if want == "sign":
        if phase in ("trust", "sign"):
            return CaState(generation=g, phase="sign")
        raise ConfigError(["caRotation: sign needs the new CAs trusted on every host first: set caRotation to "
                           "trust, `pulumi up`, then sign"])
    raise ConfigError([f"caRotation: {want!r} is not one of {', '.join(PHASES)}"])


WARN_DAYS = 90  # how long before a CA would be replaced by itself the preview says so


def expiry_warning(outputs: Optional[Mapping[str, Any]], renew_hours: int,
                   now: Optional[datetime] = None) -> Optional[str]:
    """A warning once the first CA to expire (`pki.caValidUntil`, as the last `up` exported it)
    is within WARN_DAYS of its renewal window: inside it, pulumi-tls would replace the CA, and so
    every certificate, in one `up`, which is an outage rather than a rotation."""
    until = ((outputs or {}).get("pki") or {}).get("caValidUntil")
    if not until:
        return None
    end = datetime.fromisoformat(str(until).replace("Z", "+00:00"))
    renews = end - timedelta(hours=renew_hours)
    if (now or datetime.now(timezone.utc)) < renews - timedelta(days=WARN_DAYS):
        return None
    return (f"the cluster's CAs are valid until {until}; from {renews:%Y-%m-%d} an `up` would replace them, and "
            "every certificate with them, at once: rotate them before (caRotation: trust, then sign, then done; "
            "README, Day-2 how-tos)")
