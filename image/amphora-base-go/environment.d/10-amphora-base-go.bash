# Defaults of the amphora image (each can be overridden from the caller's
# environment).

# The controller delivers the agent configuration, the certificates and
# the rsyslog forwarding configuration on a config drive.
export DIB_CLOUD_INIT_DATASOURCES=${DIB_CLOUD_INIT_DATASOURCES:-ConfigDrive}

# No ifupdown stanzas for eth0/eth1 from the debootstrap element: cloud-init
# configures the management NIC from the config drive, and a stanza for a
# name a hot-plugged VIP or member NIC might get at boot would run a DHCP
# client on it in the root namespace before the agent moves it away.
export DIB_APT_MINIMAL_CREATE_INTERFACES=${DIB_APT_MINIMAL_CREATE_INTERFACES:-0}

# Operators log in with the load balancer's key pair; Octavia's
# diskimage-create.sh sets False with its remove-sshd element.
export DIB_OCTAVIA_AMP_USE_SSH=${DIB_OCTAVIA_AMP_USE_SSH:-True}

# Boot straight into the kernel: nobody watches an amphora's boot menu.
export DIB_GRUB_TIMEOUT=${DIB_GRUB_TIMEOUT:-0}
