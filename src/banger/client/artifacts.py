"""Images, kernels, templates, the warm pool and the daemon itself.

Their manifests are plain JSON here (dicts): they are the daemon's files, not contract structs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from banger.client.base import BaseClient, ProgressFn

if TYPE_CHECKING:
    from banger.rpc.methods import CatalogRow


class ArtifactApi(BaseClient):
    def image_catalog(self) -> list[CatalogRow]:
        from banger.rpc.methods import CatalogRow, NoParams
        from banger.rpc.methods.image import IMAGE_CATALOG

        return self.call_as(IMAGE_CATALOG, NoParams(), list[CatalogRow])

    def image_list(self) -> list[dict[str, Any]]:
        from banger.rpc.methods import NoParams
        from banger.rpc.methods.image import IMAGE_LIST

        return list(self.call(IMAGE_LIST, NoParams()))

    def image_show(self, name: str) -> dict[str, Any]:
        from banger.rpc.methods import NameParams
        from banger.rpc.methods.image import IMAGE_SHOW

        return dict(self.call(IMAGE_SHOW, NameParams(name)))

    def image_pull(self, source: str, *, sha256: str | None = None, name: str | None = None,
                   on_progress: ProgressFn | None = None) -> dict[str, Any]:
        """A catalog name, an OCI reference, or a bundle file/URL with its sha256."""
        from banger.rpc.methods.image import IMAGE_PULL, ImagePullParams

        return dict(self.call(IMAGE_PULL, ImagePullParams(source, sha256, name),
                              on_progress=on_progress))

    def image_delete(self, name: str) -> None:
        from banger.rpc.methods import NameParams
        from banger.rpc.methods.image import IMAGE_DELETE

        self.call(IMAGE_DELETE, NameParams(name))

    def kernel_catalog(self) -> list[CatalogRow]:
        from banger.rpc.methods import CatalogRow, NoParams
        from banger.rpc.methods.kernel import KERNEL_CATALOG

        return self.call_as(KERNEL_CATALOG, NoParams(), list[CatalogRow])

    def kernel_list(self) -> list[dict[str, Any]]:
        from banger.rpc.methods import NoParams
        from banger.rpc.methods.kernel import KERNEL_LIST

        return list(self.call(KERNEL_LIST, NoParams()))

    def kernel_pull(self, name: str, *, force: bool = False,
                    on_progress: ProgressFn | None = None) -> dict[str, Any]:
        from banger.rpc.methods.kernel import KERNEL_PULL, KernelPullParams

        return dict(self.call(KERNEL_PULL, KernelPullParams(name, force), on_progress=on_progress))

    def template_list(self) -> list[dict[str, Any]]:
        from banger.rpc.methods import NoParams
        from banger.rpc.methods.template import TEMPLATE_LIST

        return list(self.call(TEMPLATE_LIST, NoParams()))

    def template_build(self, *, image: str | None = None, vcpu: int | None = None,
                       memory_mib: int | None = None,
                       on_progress: ProgressFn | None = None) -> dict[str, Any]:
        from banger.rpc.methods.template import TEMPLATE_BUILD, TemplateBuildParams

        return dict(self.call(TEMPLATE_BUILD, TemplateBuildParams(image, vcpu, memory_mib),
                              on_progress=on_progress))

    def pool_set(self, size: int, *, image: str | None = None, vcpu: int | None = None,
                 memory_mib: int | None = None) -> dict[str, Any]:
        """Keep `size` paused clones of this shape ready (0 drains it)."""
        from banger.rpc.methods.pool import POOL_SET, PoolSetParams

        return dict(self.call(POOL_SET, PoolSetParams(size, image, vcpu, memory_mib)))

    def pool_list(self) -> list[dict[str, Any]]:
        from banger.rpc.methods import NoParams
        from banger.rpc.methods.pool import POOL_LIST

        return list(self.call(POOL_LIST, NoParams()))

    def daemon_status(self) -> dict[str, Any]:
        from banger.rpc.methods import NoParams
        from banger.rpc.methods.system import DAEMON_STATUS

        return dict(self.call(DAEMON_STATUS, NoParams()))
