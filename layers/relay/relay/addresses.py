"""Which limit a source address counts against.

An IPv4 address is one subscriber (or one NAT): it counts by itself. An IPv6 subscriber
is normally given a whole /64 (RFC 6177, and SLAAC needs one) and can pick a fresh
address in it for every request, so IPv6 counts by its /64. An IPv4-mapped IPv6
address (::ffff:192.0.2.1, as a dual-stack listener may report an IPv4 peer) is that
IPv4 host and counts with it, so the two spellings share one limit.
"""

from __future__ import annotations

import ipaddress

IPV6_SUBSCRIBER_PREFIX = 64
# API Gateway always reports an address; anything else (a test event, a future format)
# still counts against a limit, all such callers together under one key.
UNKNOWN_ADDRESS = "unknown"


def limit_key(source_ip: str) -> str:
    """The key a source address's limits are counted under: the IPv4 address itself, or
    the IPv6 /64 network in its compressed form (2001:db8:1:2::/64)."""
    try:
        address = ipaddress.ip_address(source_ip.strip())
    except ValueError:
        return UNKNOWN_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_SUBSCRIBER_PREFIX), strict=False)
        return str(network)
    return str(address)
