"""Calling the node's services without losing a response to Fast DDS's matching race.

A service answers on a response topic; Fast DDS (rmw_fastrtps) sends a response only once the
service's response writer has matched the client's response reader, and gives up after the
writer's max_blocking_time (100 ms by default: "failed to send response (timeout): client will not
receive response"). ``wait_for_service`` only says the service was discovered, not that it has
matched this client, so a first call right after it can lose its answer and wait forever. The
node's own Fast DDS profile (:mod:`.dds`) raises that wait to 1 s on the node's side; these helpers
also cover servers without it.

:func:`wait_until_served` waits for the service and then sends a side-effect-free probe request,
resending it after a short wait, until one is answered: from then on the service has matched this
client both ways. :func:`call` waits for one answer and resends a request whose answer did not come
(use it for requests that may be repeated: queries, loads, resets). The clients in gags_ros (the
demo, the tests) use both; the README shows the same for users' clients.
"""

from __future__ import annotations

import time
from typing import Optional

from rclpy.client import Client
from rclpy.executors import Executor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy


def service_qos(outstanding: int = 256) -> QoSProfile:
    """Client QoS whose keep-last histories hold ``outstanding`` requests and answers.

    Fast DDS delivers every answer of a service to every client's response reader; a client picks
    its own when it takes them. So the depth must cover the answers to *all* clients of the service
    that can arrive before this client takes its own (it may be busy, or starved of CPU), not only
    its own requests: with 64, a client that took its 5 answers after 150 answers to another client
    had arrived lost all 5 (tests/test_ros_robustness.py). The default is the node's
    ``ros.service_qos_depth`` (rclpy's default of 10 drops answers of any burst)."""
    return QoSProfile(depth=max(10, outstanding), reliability=ReliabilityPolicy.RELIABLE)


def _answer(client: Client, request, executor: Executor, timeout: float):
    fut = client.call_async(request)
    executor.spin_until_future_complete(fut, timeout_sec=timeout)
    if fut.done():
        return fut.result()
    client.remove_pending_request(fut)  # a late answer to it is dropped, not mixed up with the next
    return None


def wait_until_served(node: Node, client: Client, probe, timeout: float = 30.0, attempt: float = 1.0,
                      executor: Optional[Executor] = None):
    """Wait until ``client``'s service answers ``probe`` (a request with no side effect, e.g. a Query
    with empty text); returns that answer. Raises TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with _spinning(node, executor) as ex:
        while time.monotonic() < deadline:
            if not client.wait_for_service(timeout_sec=max(0.0, deadline - time.monotonic())):
                break
            res = _answer(client, probe, ex, min(attempt, max(0.01, deadline - time.monotonic())))
            if res is not None:
                return res
    raise TimeoutError(f"service {client.srv_name} did not answer within {timeout} s")


def call(node: Node, client: Client, request, timeout: float = 60.0, attempts: int = 2,
         executor: Optional[Executor] = None):
    """Send ``request`` and return its answer, resending it when no answer came within ``timeout`` s
    (at most ``attempts`` sends). Raises TimeoutError when none came."""
    with _spinning(node, executor) as ex:
        for _ in range(max(1, attempts)):
            if not client.wait_for_service(timeout_sec=timeout):
                break
            res = _answer(client, request, ex, timeout)
            if res is not None:
                return res
    raise TimeoutError(f"no answer from {client.srv_name} within {attempts} x {timeout} s")


def call_served(node: Node, client: Client, request, timeout: float = 30.0, executor: Optional[Executor] = None):
    """:func:`call`, except that a client's first call is :func:`wait_until_served` (resent every 2 s
    until answered: a response sent before the service matched the client's reader is lost), so a
    caller never depends on matching luck; later calls are sent once."""
    if not getattr(client, "_gags_served", False):
        res = wait_until_served(node, client, request, timeout=timeout, attempt=2.0, executor=executor)
        client._gags_served = True
        return res
    return call(node, client, request, timeout=timeout, attempts=1, executor=executor)


class _spinning:
    """The given executor, or a temporary one spinning ``node`` for the duration."""

    def __init__(self, node: Node, executor: Optional[Executor]):
        self.node, self.given = node, executor

    def __enter__(self) -> Executor:
        if self.given is not None:
            return self.given
        self.ex = SingleThreadedExecutor(context=self.node.context)
        self.ex.add_node(self.node)
        return self.ex

    def __exit__(self, *exc) -> None:
        if self.given is None:
            self.ex.remove_node(self.node)
