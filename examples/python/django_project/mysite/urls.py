from django.urls import path

from demo import views

urlpatterns = [
    path('hello/<str:name>', views.hello),
]
