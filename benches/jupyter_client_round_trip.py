"""The reference: jupyter_client's execute round trip of CODE (default `pass`) on a running kernel.

Usage: python jupyter_client_round_trip.py CONNECTION_FILE ITERATIONS [CODE]
Prints one line of JSON: {"p50_us": ..., "p99_us": ..., "max_us": ..., "n": ...}. A round trip ends when both
the shell execute_reply and the iopub idle status of the request have arrived, as in our client.
"""

import json
import sys
import time

from jupyter_client import BlockingKernelClient


def main():
    connection_file, iterations = sys.argv[1], int(sys.argv[2])
    code = sys.argv[3] if len(sys.argv) > 3 else "pass"
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=60)

    def round_trip():
        msg_id = client.execute(code)
        reply = idle = False
        while not (reply and idle):
            if not reply:
                message = client.get_shell_msg(timeout=10)
                reply = message["parent_header"].get("msg_id") == msg_id
            if not idle:
                message = client.get_iopub_msg(timeout=10)
                idle = (
                    message["parent_header"].get("msg_id") == msg_id
                    and message["msg_type"] == "status"
                    and message["content"]["execution_state"] == "idle"
                )

    for _ in range(50):
        round_trip()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        round_trip()
        samples.append(time.perf_counter() - start)
    samples.sort()
    print(json.dumps({
        "p50_us": samples[len(samples) // 2] * 1e6,
        "p99_us": samples[int(len(samples) * 0.99)] * 1e6,
        "max_us": samples[-1] * 1e6,
        "n": len(samples),
    }))
    client.stop_channels()


if __name__ == "__main__":
    main()
