"""Drive wvs with the Python client generated from its OpenAPI document (wvs_client), with
no hand-written HTTP: `setup` adds a weighted service with three real servers and edits a
weight; `check N` reads the counters and prints them as JSON, after the test sent N
requests; `delete` deletes the service and checks it is gone.

usage: client_e2e.py BASE_URL TOKEN setup|check|delete
"""
import json
import sys

from wvs_client import AuthenticatedClient
from wvs_client.api.reals import edit_real
from wvs_client.api.services import add_service, delete_service, get_service, list_services
from wvs_client.models import ProtocolName, RealDef, RealSettings, ServiceDef

VIP = "198.18.100.1:80"
REALS = ["198.19.0.11:80", "198.19.0.12:80", "198.19.0.13:80"]


def main():
    base, token, step = sys.argv[1], sys.argv[2], sys.argv[3]
    client = AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True)
    if step == "setup":
        r = add_service.sync_detailed(
            client=client,
            body=ServiceDef(
                protocol=ProtocolName.TCP,
                address=VIP,
                scheduler="wrr",
                real=[RealDef(address=a, weight=1) for a in REALS],
            ),
        )
        assert r.status_code == 201, (r.status_code, r.content)
        assert [x.address for x in r.parsed.reals] == REALS, r.parsed
        # rs1 takes three times the others: 3:1:1.
        r = edit_real.sync_detailed(
            proto=ProtocolName.TCP, addr=VIP, real=REALS[0], client=client,
            body=RealSettings(weight=3),
        )
        assert r.status_code == 200, (r.status_code, r.content)
        assert [x.weight for x in r.parsed.reals] == [3, 1, 1], r.parsed
        print("setup: ok")
    elif step == "check":
        svc = get_service.sync(proto=ProtocolName.TCP, addr=VIP, client=client)
        print(json.dumps({
            "conns": svc.stats.conns,
            "inpkts": svc.stats.inpkts,
            "outpkts": svc.stats.outpkts,
            "reals": {x.address: x.stats.conns for x in svc.reals},
        }))
    elif step == "delete":
        r = delete_service.sync_detailed(proto=ProtocolName.TCP, addr=VIP, client=client)
        assert r.status_code == 204, (r.status_code, r.content)
        assert list_services.sync(client=client) == [], "the service is gone"
        r = get_service.sync_detailed(proto=ProtocolName.TCP, addr=VIP, client=client)
        assert r.status_code == 404 and "no service" in r.parsed.error, r
        print("delete: ok")
    else:
        sys.exit(f"unknown step {step}")


if __name__ == "__main__":
    main()
