
V


service.name

checkout64
