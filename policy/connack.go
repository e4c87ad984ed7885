package policy

// AppendConnack appends a CONNACK refusing a connection with code, in the format of the
// given protocol level:
//
//   - 3.1 and 3.1.1: 0x20 0x02, session present 0, then code.V3() (3.1.1 §3.2).
//   - 5.0: 0x20, remaining length, acknowledge flags 0, the reason code, and properties that
//     hold a Reason String (0x1F) when reason is not empty (5.0 §3.2).
//
// Any level other than Level5, including an unsupported one, gets the 3.x form: a 3.x
// CONNACK with 0x01 is what a client of an unknown newer version can expect from an older
// server [MQTT-3.1.2-2]. reason is left out when it is not a valid MQTT UTF-8 string. A v5
// client may have announced a Maximum Packet Size; use (*Connect).AppendConnack to honour it.
func AppendConnack(dst []byte, level byte, code Code, reason string) []byte {
	if level != Level5 {
		return append(dst, 0x20, 0x02, 0x00, code.V3())
	}
	if !validString(reason) {
		reason = ""
	}
	props := 0
	if reason != "" {
		props = 1 + 2 + len(reason)
	}
	dst = append(dst, 0x20)
	dst = appendVBI(dst, 2+vbiLen(props)+props)
	dst = append(dst, 0x00, byte(code))
	dst = appendVBI(dst, props)
	if reason != "" {
		dst = append(dst, propReasonString)
		dst = appendBytes16(dst, reason)
	}
	return dst
}

// AppendConnack is AppendConnack for c's level that leaves the Reason String out when it
// would make the CONNACK larger than the Maximum Packet Size c announced [MQTT-3.2.2-19].
// c may come from a ParseConnect that failed with a *Reject: Level is set by then.
func (c *Connect) AppendConnack(dst []byte, code Code, reason string) []byte {
	start := len(dst)
	dst = AppendConnack(dst, c.Level, code, reason)
	if c.Level == Level5 && reason != "" {
		if max := maxPacketSize(c.Properties); max != 0 && len(dst)-start > max {
			dst = AppendConnack(dst[:start], c.Level, code, "")
		}
	}
	return dst
}
