
	checkÿout