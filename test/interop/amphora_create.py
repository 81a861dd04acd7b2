#!/usr/bin/python3
"""Capture what the Octavia controller asks Nova for when it creates an
amphora: runs the controller's own CertComputeCreate task
(octavia.controller.worker.v2.tasks.compute_tasks) with a compute driver
that records the build() call instead of calling Nova.

Reads one JSON document on stdin:
  {"amphora_id": "...",
   "server_pem": "<path: server certificate + key, PEM>",
   "client_ca": "<path: the CA of the controller's client certificates>",
   "topology": "SINGLE" | "ACTIVE_STANDBY",
   "conf": {"<group>": {"<option>": value, ...}, ...}}   (CONF overrides,
                                e.g. health_manager.controller_ip_port_list)
and prints the keyword arguments of the compute driver's build() as
JSON: name, key_name, config_drive_files ({path: content} or null),
user_data, network_ids, port_ids, ... exactly as the controller renders
them (agent configuration from AgentJinjaTemplater, 10-rsyslog.conf from
the logging templater, user data from UserDataJinjaCfg).
Needs Debian's python3-octavia; run with /usr/bin/python3.
"""
import json
import sys
import warnings

warnings.filterwarnings('ignore')

from cryptography import fernet  # noqa: E402
from oslo_config import cfg  # noqa: E402
from oslo_log import log as oslo_logging  # noqa: E402

from octavia.common import config as _octavia_config  # noqa: E402,F401
from octavia.common import constants  # noqa: E402
from octavia.common import utils  # noqa: E402
from octavia.controller.worker.v2.tasks import compute_tasks  # noqa: E402

CONF = cfg.CONF


class RecordingCompute(object):
    """Stands for Nova: records the build request."""

    def __init__(self):
        self.request = None

    def build(self, **kwargs):
        self.request = kwargs
        return 'recorded-compute-id'


def main():
    req = json.load(sys.stdin)
    # The controller's services register oslo.log's options (debug, ...)
    # before they parse their configuration.
    oslo_logging.register_options(CONF)
    CONF([], project='octavia', default_config_files=[])
    CONF.set_override('compute_driver', 'compute_noop_driver',
                      group='controller_worker')
    CONF.set_override('client_ca', req['client_ca'],
                      group='controller_worker')
    for group, opts in req.get('conf', {}).items():
        for name, value in opts.items():
            CONF.set_override(name, value,
                              group=None if group == 'DEFAULT' else group)
    with open(req['server_pem'], encoding='utf-8') as f:
        pem = f.read()
    # The controller stores the amphora's certificate encrypted and hands
    # the task the encrypted form.
    key = utils.get_compatible_server_certs_key_passphrase()
    server_pem = fernet.Fernet(key).encrypt(pem.encode('utf-8')).decode()

    task = compute_tasks.CertComputeCreate()
    task.compute = RecordingCompute()
    flavor = {constants.LOADBALANCER_TOPOLOGY:
              req.get('topology', constants.TOPOLOGY_SINGLE)}
    task.execute(req['amphora_id'], server_pem, server_group_id=None,
                 flavor=flavor)
    out = dict(task.compute.request)
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
