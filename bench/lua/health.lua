-- GET /api/v1/health/live (the ceiling).
function request() return wrk.format("GET", "/api/v1/health/live") end
