"""WebSocket close codes (RFC 6455 §7.4.1), named once for every transport and shell."""

NORMAL = 1000  # the call ended
GOING_AWAY = 1001  # the server is shutting down
PROTOCOL = 1002  # the peer broke the protocol
UNSUPPORTED = 1003  # a kind of data we do not accept
POLICY = 1008  # refused: bad token, unknown call, too many invalid messages
TOO_BIG = 1009  # a message over the size limit
INTERNAL = 1011  # our fault: storage or a parser bug
SERVICE_RESTART = 1012  # the server is restarting
TRY_AGAIN = 1013  # busy: too many calls now
