package tlspsk

func groupName(g uint16) string {
	if g == groupX25519 {
		return "X25519"
	}
	return "P-256"
}
