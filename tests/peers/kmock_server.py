"""A standalone Kubernetes API emulator for the tests: kmock's KubernetesEmulator served on 127.0.0.1.

kmock is a pytest fixture library; this runner serves its emulator as a child process of the Rust tests.

    python kmock_server.py [--port N] [--state FILE] [--expire-watches] [--omit RESOURCE]...

Prints `PORT <n>` on stdout once listening. Stops when stdin closes (the parent test is gone) or on SIGTERM.
With --state, the objects are loaded from FILE at start and written to it after every change, so a restarted
emulator keeps its objects as a restarted API server keeps etcd. kmock assigns no resourceVersion; the tests set
one on every object they write, and this runner gives one to an object created without (`kmock-N`), and its
namespace (from the URL) to one created without, and a uid and generation 1 when it has none. With
--expire-watches, the first watch of each resource is answered with `410 Gone` (as after an API server restart
that compacted its history), so clients must relist. --omit leaves a resource (`group/version/plural`) unserved,
as a cluster without that CRD. Lists and watches honour `fieldSelector` as the API server does for equality on
fields (`type=kubernetes.io/tls`, `metadata.name!=x`), and `labelSelector` for equality on labels
(`sluice.dev/replica-report=true`).
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import uuid

from kmock import KubernetesEmulator, Server  # noqa: F401  (public names)

# The kinds Sluice reads and writes (sluice::source::kube::ACCESS): resource -> (kind, namespaced).
RESOURCES = {
    "v1/services": ("Service", True),
    "v1/pods": ("Pod", True),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True),
    "sluice.dev/v1alpha1/releasepolicies": ("ReleasePolicy", True),
    "networking.istio.io/v1/virtualservices": ("VirtualService", True),
    "networking.istio.io/v1/destinationrules": ("DestinationRule", True),
    "networking.istio.io/v1/sidecars": ("Sidecar", True),
    "security.istio.io/v1/peerauthentications": ("PeerAuthentication", True),
    "gateway.networking.k8s.io/v1/httproutes": ("HTTPRoute", True),
    "gateway.networking.k8s.io/v1/gateways": ("Gateway", True),
    "gateway.networking.k8s.io/v1/gatewayclasses": ("GatewayClass", False),
    "gateway.networking.k8s.io/v1beta1/referencegrants": ("ReferenceGrant", True),
    "networking.istio.io/v1/gateways": ("Gateway", True),
    "coordination.k8s.io/v1/leases": ("Lease", True),
    "apps/v1/deployments": ("Deployment", True),
    "v1/secrets": ("Secret", True),
    "v1/configmaps": ("ConfigMap", True),
    "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": ("MutatingWebhookConfiguration", False),
}


# The kinds with a `status` subresource (beside `scale` for the two that have it).
STATUS = {"ReleasePolicy", "Deployment", "HTTPRoute", "Gateway", "GatewayClass"}


def field(obj, path):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return "" if obj is None else str(obj)


def selected(obj, selector):
    """Whether `obj` matches a fieldSelector: comma-separated `path=value`, `path==value` or `path!=value`."""
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            path, value = term.split("!=", 1)
            if field(obj, path) == value:
                return False
        else:
            path, value = term.replace("==", "=").split("=", 1)
            if field(obj, path) != value:
                return False
    return True


def labelled(obj, selector):
    """Whether `obj` matches a labelSelector of equality terms: comma-separated `key=value` or `key==value`."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        key, value = term.replace("==", "=").split("=", 1)
        if labels.get(key) != value:
            return False
    return True


def save(emulator, path):
    objects = [
        {"resource": f"{res.group}/{res.version}/{res.plural}" if res.group else f"{res.version}/{res.plural}",
         "namespace": ns, "name": name, "object": obj.raw}
        for (res, ns, name), obj in emulator.objects.items()
        if not obj.deleted
    ]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(objects, f)
    os.replace(tmp, path)


def load(emulator, path):
    if not os.path.exists(path):
        return
    with open(path) as f:
        for entry in json.load(f):
            emulator.objects[entry["resource"], entry["namespace"], entry["name"]] = entry["object"]


class Emulator(KubernetesEmulator):
    """Writes the state file after every request that changes objects."""

    state_path = None
    expire_watches = False
    expired = set()
    assigned = 0

    async def _serve_list(self, request):
        listed = await super()._serve_list(request)
        selector, labels = request.params.get("fieldSelector"), request.params.get("labelSelector")
        listed["items"] = [o for o in listed["items"] if selected(o, selector) and labelled(o, labels)]
        return listed

    async def _serve_watch(self, request):
        selector, labels = request.params.get("fieldSelector"), request.params.get("labelSelector")
        async for event in self._watch_all(request):
            obj = event.get("object", {}) if isinstance(event, dict) else {}
            if not isinstance(event, dict) or event.get("type") == "ERROR" or (selected(obj, selector) and labelled(obj, labels)):
                yield event

    async def _watch_all(self, request):
        if self.expire_watches and request.resource not in self.expired:
            self.expired.add(request.resource)
            yield b""
            yield {"type": "ERROR", "object": {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                                               "code": 410, "reason": "Expired", "message": "too old resource version"}}
            return
        async for event in super()._serve_watch(request):
            yield event

    async def _handle(self, request):
        # An object created without a resourceVersion or namespace (Sluice's own ConfigMaps) gets them, as from an
        # API server: kube-rs's watcher refuses an event whose object has no resourceVersion (and relists), and a
        # namespaced watch sees only objects that name their namespace.
        data = request.data
        if request.method is not None and str(request.method.value) == "POST" and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if isinstance(meta, dict) and not meta.get("resourceVersion"):
                Emulator.assigned += 1
                meta["resourceVersion"] = f"kmock-{Emulator.assigned}"
            if isinstance(meta, dict) and request.namespace and not meta.get("namespace"):
                meta["namespace"] = request.namespace
            # As an API server: a created object has a uid (owner references name it) and generation 1.
            if isinstance(meta, dict):
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("generation", 1)
        try:
            return await super()._handle(request)
        finally:
            if self.state_path and request.method is not None and str(request.method.value) in ("POST", "PATCH", "PUT", "DELETE"):
                save(self, self.state_path)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", default=None)
    parser.add_argument("--expire-watches", action="store_true")
    parser.add_argument("--omit", action="append", default=[])
    args = parser.parse_args()

    async with Emulator() as emulator:
        emulator.state_path = args.state
        emulator.expire_watches = args.expire_watches
        for resource, (kind, namespaced) in RESOURCES.items():
            if resource in args.omit:
                continue
            emulator.resources[resource] = {
                "kind": kind, "namespaced": namespaced, "verbs": ["list", "watch", "get", "create", "patch", "delete"],
                "subresources": (["status"] if kind in STATUS else []) + (["scale"] if kind in ("ReleasePolicy", "Deployment") else []),
            }
        if args.state:
            load(emulator, args.state)
        async with Server(emulator, host="127.0.0.1", port=args.port) as server:
            print(f"PORT {server.port}", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.buffer.read1(4096) else None)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
