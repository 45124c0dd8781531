package server

// filteredTTL is the TTL (seconds) of the SOA in a filtered AAAA answer: long enough that clients
// do not ask again at once, short enough that turning the filter off takes effect soon.
//
// A filtered AAAA query gets NODATA (wire.AppendNoData: NOERROR, no answer, an SOA so that the
// answer is negatively cacheable, RFC 2308). Never NXDOMAIN: that would tell the client the NAME
// does not exist, and some clients then give up on its A record too. The SOA is synthetic because
// the real zone apex is unknown without asking upstream, which is what the filter exists to avoid.
const filteredTTL = 30
