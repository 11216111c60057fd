"""README command 1 (placeholder until the simulation demo lands): start the mapping node as
mapping.launch.py would, call its Query service from this process and print the answer."""

from __future__ import annotations

import os
import random
import sys
import time


def main(argv=None) -> int:
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 101)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from gags_ros.ros.launch_spec import mapping_nodes
    from gags_ros.ros.launcher import start
    from gags_ros.srv import Query

    procs = start(mapping_nodes(overrides={"device": "cpu"}))
    rclpy.init()
    node = Node("gags_demo")
    try:
        client = node.create_client(Query, "gags/query")
        if not client.wait_for_service(timeout_sec=60):
            print("demo: the mapping node's query service did not appear", file=sys.stderr)
            return 1
        fut = client.call_async(Query.Request(text="the red mug"))
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        ex.spin_until_future_complete(fut, timeout_sec=60)
        res = fut.result()
        print(f"demo: Query('the red mug') -> success={res.success} message='{res.message}'")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        for p in procs:
            p.send_signal(2)
        for p in procs:
            p.wait(10)


if __name__ == "__main__":
    raise SystemExit(main())
