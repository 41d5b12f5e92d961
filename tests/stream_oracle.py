#!/usr/bin/env python3
"""DingTalk's official Python Stream SDK pointed at the simulator's gateway: the oracle of
tests/stream.rs. Usage: stream_oracle.py SIM_URL APPKEY APPSECRET

Prints one JSON line per event to stdout and acks each with success; the SDK's own log goes
to stderr. Runs until killed. Only the SDK's public surface is used: its class attribute
OPEN_CONNECTION_API is pointed at the simulator, as a test of a local gateway must."""

import json
import sys

import dingtalk_stream
from dingtalk_stream import AckMessage


class AllEvents(dingtalk_stream.EventHandler):
    """Prints every event and acks it with success."""

    async def process(self, event: dingtalk_stream.EventMessage):
        line = {
            "event_id": event.headers.event_id,
            "event_type": event.headers.event_type,
            "message_id": event.headers.message_id,
            "event_born_time": event.headers.event_born_time,
            "data": event.data,
        }
        print(json.dumps(line), flush=True)
        return AckMessage.STATUS_OK, "OK"


def main() -> None:
    url, appkey, appsecret = sys.argv[1:4]
    dingtalk_stream.DingTalkStreamClient.OPEN_CONNECTION_API = (
        url.rstrip("/") + "/v1.0/gateway/connections/open"
    )
    client = dingtalk_stream.DingTalkStreamClient(
        dingtalk_stream.Credential(appkey, appsecret)
    )
    client.register_all_event_handler(AllEvents())
    client.start_forever()


if __name__ == "__main__":
    main()
