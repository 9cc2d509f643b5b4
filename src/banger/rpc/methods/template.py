"""template.* methods: the saved VM shapes new VMs restore from."""

from __future__ import annotations

import msgspec

from banger.rpc.methods import Method, NoParams


class TemplateBuildParams(msgspec.Struct, forbid_unknown_fields=True):
    image: str | None = None
    vcpu: int | None = None
    memory_mib: int | None = None


class TemplatePruneParams(msgspec.Struct, forbid_unknown_fields=True):
    all: bool = False


class TemplatePruneResult(msgspec.Struct):
    removed: list[str]


TEMPLATE_LIST = Method("template.list", NoParams, "list[TemplateInfo]", "Templates on disk.")
TEMPLATE_BUILD = Method("template.build", TemplateBuildParams, "TemplateInfo",
                        "Build the template a `vm create` with these options would use.",
                        long=True)
TEMPLATE_PRUNE = Method("template.prune", TemplatePruneParams, "TemplatePruneResult",
                        "Remove templates whose image or kernel changed (or all).")
