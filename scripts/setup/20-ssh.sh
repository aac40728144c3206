# Sourced by scripts/test.sh: the SSH layer's tests start a real OpenSSH sshd on 127.0.0.1
# (tests/support/sshd.rs) and the SSH benchmark compares against the OpenSSH client.
need_apt openssh-server openssh-client
