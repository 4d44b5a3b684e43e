
1


service.name

checkout:not a fixed64