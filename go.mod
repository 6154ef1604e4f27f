module github.com/opsbox/opsbox

go 1.26
