#!/usr/bin/python3
"""Drive an amphora agent with the Octavia controller's own REST client.

Reads one JSON document on stdin:
  {"host": ..., "port": ..., "amphora_id": ..., "client_cert": ..., "server_ca": ...,
   "retries": 3, "retry_interval": 1,
   "calls": [{"call": "get_info"}, {"call": "update_agent_config", "args": ["..."]}, ...]}
and prints a JSON list with one entry per call:
  {"ok": true, "result": ...} or {"ok": false, "error": "<exception class>", "message": "..."}

A call names a method of octavia.amphorae.drivers.haproxy.rest_api_driver
.AmphoraAPIClient1_0 (the amphora object is passed first automatically),
or "api_version" for the base client's version discovery, or
"driver_versions" for the driver's haproxy version detection.
Needs Debian's python3-octavia; run with /usr/bin/python3.
"""
import json
import sys
import types
import warnings

warnings.filterwarnings('ignore')

from oslo_config import cfg  # noqa: E402
from oslo_log import log as oslo_logging  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common import constants  # noqa: E402
from octavia.amphorae.drivers.haproxy import rest_api_driver  # noqa: E402

CONF = cfg.CONF


def setup(req):
    try:
        oslo_logging.register_options(CONF)
    except cfg.ArgsAlreadyParsedError:
        pass
    CONF([], project='octavia', default_config_files=[])
    o = CONF.set_override
    o('client_cert', req['client_cert'], group='haproxy_amphora')
    o('server_ca', req['server_ca'], group='haproxy_amphora')
    o('bind_port', req['port'], group='haproxy_amphora')
    o('connection_max_retries', req.get('retries', 3), group='haproxy_amphora')
    o('connection_retry_interval', req.get('retry_interval', 1),
      group='haproxy_amphora')
    o('rest_request_conn_timeout', 5, group='haproxy_amphora')
    o('rest_request_read_timeout', req.get('read_timeout', 60),
      group='haproxy_amphora')
    o('agent_tls_protocol', 'TLSv1.2', group='amphora_agent')


def amphora(req, api_version='1.0'):
    return types.SimpleNamespace(
        id=req['amphora_id'], lb_network_ip=req['host'],
        api_version=api_version, status=constants.AMPHORA_ALLOCATED,
        vrrp_ip=None, ha_ip=None, vrrp_port_id=None, ha_port_id=None,
        role=constants.ROLE_STANDALONE, vrrp_interface=None, vrrp_id=1,
        vrrp_priority=100)


class VersionProbe(object):
    """The driver's own version discovery, without the rest of the driver
    (which needs a database)."""
    _drv = rest_api_driver.HaproxyAmphoraLoadBalancerDriver
    _get_haproxy_versions = _drv._get_haproxy_versions
    _populate_amphora_api_version = _drv._populate_amphora_api_version

    def __init__(self, client):
        self.clients = {'base': rest_api_driver.AmphoraAPIClientBase(),
                        '1.0': client}


def jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str, list, dict)):
        return v
    if hasattr(v, 'status_code'):
        out = {'status_code': v.status_code,
               'headers': dict(v.headers)}
        try:
            out['json'] = v.json()
        except ValueError:
            out['text'] = v.text
        return out
    return repr(v)


def main():
    req = json.load(sys.stdin)
    setup(req)
    client = rest_api_driver.AmphoraAPIClient1_0()
    out = []
    for call in req['calls']:
        name, args = call['call'], call.get('args', [])
        try:
            if name == 'api_version':
                res = rest_api_driver.AmphoraAPIClientBase().get_api_version(
                    amphora(req, api_version=None))
            elif name == 'driver_versions':
                a = amphora(req, api_version=None)
                res = {'haproxy_versions':
                       VersionProbe(client)._get_haproxy_versions(a),
                       'api_version': a.api_version}
            else:
                res = getattr(client, name)(amphora(req), *args)
            out.append({'ok': True, 'result': jsonable(res)})
        except Exception as e:  # report every failure to the Go test
            out.append({'ok': False, 'error': type(e).__name__,
                        'message': str(e)})
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
